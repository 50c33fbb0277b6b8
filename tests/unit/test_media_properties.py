"""Properties of the code that converts, scales and encodes frames, over what real publishers
send: every size from 2x2 to 4096x2160 (odd or even), every rotation, sample rates from 8 to
48 kHz and one or two channels."""

from __future__ import annotations

import av
import numpy as np
import simplejpeg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from haven_recorder.frames import AudioFrame, VideoFrame, remix
from haven_recorder.viewer import encode_jpeg
from haven_recorder.writer import FORMATS, MIN_SIDE, PartWriter, fit, plan_geometry

sides = st.tuples(st.integers(2, 4096), st.integers(2, 2160))
small_sides = st.tuples(st.integers(2, 400), st.integers(2, 400))
rotations = st.sampled_from([0, 90, 180, 270])
SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def picture(width: int, height: int, rotation: int = 0, pts: float = 0.0) -> VideoFrame:
    """A frame whose pixels say where they are: luma = (x + 2y) mod 256, chroma likewise."""
    cw, ch = (width + 1) // 2, (height + 1) // 2
    y = (np.arange(width)[None, :] + 2 * np.arange(height)[:, None]) % 256
    u = (np.arange(cw)[None, :] * 3 + np.arange(ch)[:, None]) % 256
    v = 255 - u
    planes = [p.astype(np.uint8) for p in (y, u, v)]
    frame = VideoFrame.from_planes(*planes, pts)
    return VideoFrame(width, height, frame.data, pts, rotation)


@SLOW
@given(sides, rotations)
def test_upright_turns_the_picture_and_keeps_every_pixel(size, rotation):
    frame = picture(*size, rotation)
    up = frame.upright()
    assert (up.width, up.height) == frame.upright_size
    assert len(up.data) == len(frame.data)
    y, u, _ = frame.planes()
    uy, uu, _ = up.planes()
    turns = rotation // 90
    assert np.array_equal(uy, np.rot90(y, -turns)) and np.array_equal(uu, np.rot90(u, -turns))


@SLOW
@given(sides)
@example((720, 405))
@example((4095, 2159))
def test_any_size_converts_to_pyav_and_back_unchanged(size):
    frame = picture(*size)
    converted = frame.to_av()
    assert (converted.width, converted.height) == size
    assert VideoFrame.from_av(converted, 0.0).data == frame.data


@SLOW
@given(sides, rotations, st.sampled_from([160, 640, 1280, 1920]))
def test_viewer_jpeg_of_any_size_and_rotation_is_upright_and_within_max_width(
    size, rotation, max_width
):
    frame = picture(*size, rotation)
    jpeg, width, height = encode_jpeg(frame, max_width, 75)
    upright_w, upright_h = frame.upright_size
    assert width <= max(max_width, 2) and width <= upright_w and height <= upright_h
    if upright_w <= max_width:
        assert (width, height) == (upright_w, upright_h)
    else:  # scaled with its aspect ratio
        assert abs(height - upright_h * width / upright_w) <= 2
    decoded = simplejpeg.decode_jpeg(jpeg, colorspace="GRAY")
    assert decoded.shape[:2] == (height, width)


@SLOW
@given(sides, rotations, st.sampled_from(sorted(FORMATS)), st.none() | st.integers(16, 7680))
def test_fit_gives_every_encoder_an_even_picture_it_takes(size, rotation, fmt, max_width):
    frame = picture(*size, rotation).upright()
    g = plan_geometry(frame.width, frame.height, max_width, MIN_SIDE[fmt])
    fitted = fit(frame, g)
    assert (fitted.width, fitted.height) == (g.out_width, g.out_height)
    assert g.width % 2 == 0 and g.height % 2 == 0
    assert g.out_width >= MIN_SIDE[fmt] and g.out_height >= MIN_SIDE[fmt]
    assert g.width <= max(frame.width, 2) and g.height <= max(frame.height, 2)
    if max_width:
        assert g.width <= max(max_width, 2)


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(small_sides, sides),
    rotations,
    st.sampled_from(sorted(FORMATS)),
    st.sampled_from([8000, 16000, 22050, 32000, 44100, 48000]),
    st.sampled_from([1, 2]),
)
@example((720, 405), 0, "h264", 48000, 1)  # the size that raised ValueError
@example((2, 2), 90, "av1", 44100, 2)  # padded up to SVT-AV1's 64x64
@example((4095, 2159), 270, "vp9", 8000, 2)
def test_a_part_of_any_input_encodes_and_decodes(
    tmp_path_factory, size, rotation, fmt, sample_rate, channels
):
    path = tmp_path_factory.mktemp("part") / f"p.{FORMATS[fmt].extension}"
    writer = PartWriter(path, fmt, "low", audio=True, max_width=1280, channels=channels)
    chunk = sample_rate // 100  # 10 ms
    tone = (np.sin(np.arange(chunk * 50) / 5) * 8000).astype(np.int16)
    for i in range(50):  # half a second: 15 pictures, 50 audio frames
        if i % 10 in (0, 3, 7):
            writer.write_video(picture(*size, rotation, pts=i / 100))
        pcm = np.repeat(tone[i * chunk : (i + 1) * chunk, None], channels, axis=1)
        writer.write_audio(AudioFrame(pcm.tobytes(), sample_rate, channels, i / 100))
    writer.close()

    up = picture(*size, rotation).upright_size
    g = plan_geometry(*up, 1280, MIN_SIDE[fmt])
    with av.open(str(path)) as container:
        video = list(container.decode(video=0))
    with av.open(str(path)) as container:
        audio = list(container.decode(audio=0))
    assert len(video) == 15
    assert (video[0].width, video[0].height) == (g.out_width, g.out_height)
    assert audio and audio[0].layout.nb_channels == channels
    seconds = sum(a.samples for a in audio) / audio[0].sample_rate
    assert abs(seconds - 0.5) < 0.1, seconds


@given(st.integers(0, 300), st.sampled_from([1, 2]), st.sampled_from([1, 2]))
def test_remix_keeps_the_samples_and_sets_the_channels(n, have, want):
    pcm = np.arange(n * have, dtype=np.int16).reshape(n, have)
    mixed = remix(pcm, want)
    assert mixed.shape == (n, want) and mixed.dtype == np.int16
    if have == want:
        assert mixed is pcm
    elif want == 1:
        assert np.array_equal(mixed[:, 0], pcm.mean(axis=1).astype(np.int16))
    else:
        assert np.array_equal(mixed[:, 0], pcm[:, 0]) and np.array_equal(mixed[:, 1], pcm[:, 0])
