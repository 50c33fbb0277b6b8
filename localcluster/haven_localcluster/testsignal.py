"""The synthetic test signal: 720p30 video with a frame counter and a periodic white flash, and
48 kHz audio with a tone burst at each flash. Other sizes (odd, portrait, tiny) and sample
rates draw the same pattern in proportion, so `decode_counter` reads them too.

The counter is drawn twice: as digits a person can read, and as a strip of black and white
cells along the top that `decode_counter` reads back after any codec and any scaling. The flash
and the tone start on the same frame, so a receiver can measure latency and A/V offset.
"""

from __future__ import annotations

import numpy as np

WIDTH, HEIGHT, FPS = 1280, 720, 30
SAMPLE_RATE, CHANNELS = 48000, 1
AUDIO_FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms, WebRTC's audio frame size
FLASH_EVERY = 60  # frames: one flash and one tone every 2 s
TONE_HZ, TONE_SECONDS, TONE_AMPLITUDE = 1000, 0.1, 0.5

# The counter strip: COUNTER_BITS of counter, then CHECK_BITS that invert its low bits.
COUNTER_BITS, CHECK_BITS = 16, 8
CELLS = COUNTER_BITS + CHECK_BITS
STRIP_ROWS = HEIGHT // 12
BLACK, WHITE = 16, 235  # video-range luma

# A 5x7 bitmap font for the digits.
_FONT = {
    "0": ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    "1": ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    "2": ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    "3": ["11110", "00001", "00001", "01110", "00001", "00001", "11110"],
    "4": ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    "5": ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    "6": ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    "7": ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    "8": ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    "9": ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
}
_GLYPHS = {d: np.array([[c == "1" for c in row] for row in rows]) for d, rows in _FONT.items()}
DIGIT_SCALE = 16


def is_flash(frame_index: int) -> bool:
    return frame_index % FLASH_EVERY == 0


def counter_bits(counter: int) -> list[int]:
    value = counter % (1 << COUNTER_BITS)
    check = ~value & ((1 << CHECK_BITS) - 1)
    word = (value << CHECK_BITS) | check
    return [(word >> (CELLS - 1 - i)) & 1 for i in range(CELLS)]


def cell_edges(width: int) -> list[int]:
    """The counter strip's cell boundaries across `width` pixels (CELLS + 1 of them)."""
    return [i * width // CELLS for i in range(CELLS + 1)]


class VideoPattern:
    """Renders I420 frames of the test pattern, of any size (chroma is ceil(w/2) x ceil(h/2))."""

    def __init__(self, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.width, self.height = width, height
        self.strip_rows = max(1, height * STRIP_ROWS // HEIGHT)
        self.digit_scale = max(1, int(DIGIT_SCALE * min(width / WIDTH, height / HEIGHT)))
        ramp = np.linspace(40, 200, width, dtype=np.float32)
        self._background = np.broadcast_to(ramp, (height, width)).astype(np.uint8)
        chroma = ((height + 1) // 2) * ((width + 1) // 2) * 2
        self._chroma = np.full(chroma, 128, dtype=np.uint8).tobytes()

    def luma(self, frame_index: int) -> np.ndarray:
        y = (
            np.full_like(self._background, WHITE)
            if is_flash(frame_index)
            else self._background.copy()
        )
        # A moving bar, so consecutive frames differ everywhere, as in real video.
        bar = (frame_index * 8) % self.width
        y[self.strip_rows :, bar : bar + max(2, 24 * self.width // WIDTH)] = BLACK
        self._draw_digits(y, str(frame_index))
        edges = cell_edges(self.width)
        for i, bit in enumerate(counter_bits(frame_index)):
            y[: self.strip_rows, edges[i] : edges[i + 1]] = WHITE if bit else BLACK
        return y

    def _draw_digits(self, y: np.ndarray, text: str) -> None:
        s = self.digit_scale
        top = max(self.strip_rows, self.height // 2 - 7 * s // 2)
        left = max(0, self.width // 2 - len(text) * 6 * s // 2)
        for n, ch in enumerate(text):
            glyph = np.kron(_GLYPHS[ch], np.ones((s, s), dtype=bool))
            x = left + n * 6 * s
            region = y[top : top + glyph.shape[0], x : x + glyph.shape[1]]
            glyph = glyph[: region.shape[0], : region.shape[1]]  # a small picture clips it
            region[glyph] = BLACK
            region[~glyph] = WHITE

    def i420(self, frame_index: int) -> bytes:
        return self.luma(frame_index).tobytes() + self._chroma


def decode_counter(luma: np.ndarray) -> int | None:
    """Read the counter from a frame's luma plane (any resolution), or None if unreadable."""
    height, width = luma.shape
    rows = max(1, height * STRIP_ROWS // HEIGHT)
    cell = width / CELLS
    y0, y1 = rows // 4, max(rows // 4 + 1, rows * 3 // 4)
    bits = []
    for i in range(CELLS):
        x0 = int(i * cell + cell / 4)
        x1 = max(x0 + 1, int((i + 1) * cell - cell / 4))
        bits.append(1 if luma[y0:y1, x0:x1].mean() > (BLACK + WHITE) / 2 else 0)
    word = int("".join(map(str, bits)), 2)
    value, check = word >> CHECK_BITS, word & ((1 << CHECK_BITS) - 1)
    if check != (~value & ((1 << CHECK_BITS) - 1)):
        return None
    return value


def frame_is_flash(luma: np.ndarray) -> bool:
    """True for a flash frame: the picture below the counter strip is nearly all white."""
    height = luma.shape[0]
    body = luma[height * STRIP_ROWS // HEIGHT + 1 :: 4, ::4]
    return float(np.mean(body > 200)) > 0.9


def audio_samples(
    first_sample: int, count: int = AUDIO_FRAME_SAMPLES, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Mono s16 samples from `first_sample` on: silence, with a tone burst at every flash."""
    n = np.arange(first_sample, first_sample + count)
    period = sample_rate * FLASH_EVERY // FPS
    in_tone = (n % period) < int(TONE_SECONDS * sample_rate)
    tone = np.sin(2 * np.pi * TONE_HZ * n / sample_rate) * TONE_AMPLITUDE * 32767
    return np.where(in_tone, tone, 0).astype(np.int16)


def stereo(mono: np.ndarray) -> np.ndarray:
    """Interleaved two-channel samples: the mono signal left, at half its level right (the
    channels differ, and their mix still carries every tone)."""
    return np.stack([mono, mono // 2], axis=1).reshape(-1)


def tone_end(sample: int, sample_rate: int = SAMPLE_RATE) -> int:
    """The sample after the tone burst that `sample` is in, or `sample` if it is in silence."""
    period = sample_rate * FLASH_EVERY // FPS
    offset = sample % period
    tone = int(TONE_SECONDS * sample_rate)
    return sample - offset + tone if offset < tone else sample


def tone_onsets(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[float]:
    """Seconds (from the first sample) at which a tone burst starts in mono s16 `samples`.

    An onset is a loud 5 ms window with no loud window in the 200 ms before it, so a burst
    that a codec or a lost packet breaks up still counts once.
    """
    window = sample_rate // 200  # 5 ms
    usable = len(samples) // window * window
    energy = np.abs(samples[:usable].astype(np.float32)).reshape(-1, window).mean(axis=1)
    loud = np.flatnonzero(energy > 0.1 * TONE_AMPLITUDE * 32767)
    if loud.size == 0:
        return []
    quiet_before = np.diff(loud, prepend=-(10**9)) > 40  # 40 windows = 200 ms
    return [float(i * window / sample_rate) for i in loud[quiet_before] if i > 0]
