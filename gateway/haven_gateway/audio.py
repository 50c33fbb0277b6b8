"""WebSocket audio in the format Haven Player's guide plays.

The guide's `LiveStreamPlayer.playAudioFrame` decodes each `audio_frame`'s base64 `data` as
16-bit little-endian PCM and plays it as ONE channel at 44100 Hz
(`audioContext.createBuffer(1, bytes.length / 2, 44100)`); it reads no rate or channel field.
Haven Player's backend put a LiveKit `rtc.AudioFrame`'s raw `data` there, which is s16le at
48000 Hz (its track handlers never fired, so in practice it sent no audio at all). The stream
pod sends s16le at 48000 Hz with its channel count (one by default). Played at 44100 Hz, 48 kHz
audio comes out 8% slow and a semitone and a half flat, so by default the gateway converts each
connection's audio to mono 44100 Hz, with the resampler's state carried from message to message
(no clicks at message edges). `?audio=native` (or the chart's `gateway.websocket.audio:
native`) passes the pod's audio through unchanged.
"""

from __future__ import annotations

import base64
import json
import warnings

with warnings.catch_warnings():  # in the standard library up to Python 3.12 (we run 3.11)
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PLAYER_RATE, PLAYER_CHANNELS = 44100, 1
AUDIO_PREFIX = '{"type": "audio_frame"'  # how the stream pod's JSON audio messages begin


class PlayerAudio:
    """Converts one connection's audio messages to s16le mono at 44100 Hz."""

    def __init__(self, mint_id: str) -> None:
        self.mint_id = mint_id
        self._state = None
        self._rate = self._channels = None

    def convert(self, message: str) -> str:
        msg = json.loads(message)
        pcm = base64.b64decode(msg["data"])
        rate, channels = int(msg.get("sample_rate", 48000)), int(msg.get("channels", 1))
        if (rate, channels) != (self._rate, self._channels):  # a new source: start afresh
            self._state, self._rate, self._channels = None, rate, channels
        if channels == 2:
            pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
        elif channels != 1:
            raise ValueError(f"cannot mix {channels} channels down")
        if rate != PLAYER_RATE:
            pcm, self._state = audioop.ratecv(pcm, 2, 1, rate, PLAYER_RATE, self._state)
        return json.dumps(
            {
                "type": "audio_frame",
                "mint_id": self.mint_id,
                "data": base64.b64encode(pcm).decode(),
                "sample_rate": PLAYER_RATE,
                "channels": PLAYER_CHANNELS,
                "timestamp": msg.get("timestamp"),
                "source_sample_rate": rate,
                "source_channels": channels,
            }
        )
