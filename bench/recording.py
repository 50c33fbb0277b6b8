"""Per format at medium quality: the CPU cores a recording adds to the stream pod, frames
dropped over the recording, and the A/V offset measured from the flash-and-beep markers.
Then the stop latency with an encoder slower than realtime (4K at high quality, in process):
how long `stop` takes with a backlog queued, and what it dropped. Then the join of a long
recording's parts into one seekable file (remux and check, offline): its time and MB/s.

    .venv/bin/python bench/recording.py [--seconds 60] [--formats av1 h264 vp9 h264-ts]
    .venv/bin/python bench/recording.py --stop-only
    .venv/bin/python bench/recording.py --join-only [--join-minutes 60]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import measure, print_table, stack

from haven_localcluster import testsignal as ts
from haven_localcluster.mediacheck import analyze
from haven_recorder.fanout import FanOut
from haven_recorder.frames import AudioFrame, VideoFrame
from haven_recorder.join import join_parts
from haven_recorder.recording import PartInfo, Recording, RecordingSpec
from haven_recorder.writer import PartWriter, _container_options, resolve

# A format name here: a Recording format, or `h264-ts` for h264 with container mpegts.
KINDS = {"h264-ts": ("h264", "mpegts")}


def kind(name: str) -> tuple[str, str | None]:
    """(format, container) of a bench format name."""
    return KINDS.get(name, (name, None))


async def stop_latency(fmt: str, width: int, height: int, seconds: float) -> dict:
    """Publish width x height at 30 fps with audio in real time to one recording for
    `seconds`, then stop it: the encoder cannot keep up, so a backlog is queued."""
    pattern = ts.VideoPattern(width, height)
    pictures = [pattern.i420(i) for i in range(8)]
    with tempfile.TemporaryDirectory(prefix="haven-stop-") as tmp:
        fanout = FanOut()
        recorded, container = kind(fmt)
        spec = RecordingSpec(name="stop", format=recorded, quality="high", container=container)
        rec = Recording(spec, Path(tmp), fanout)
        rec.start()
        start = time.monotonic()
        video = audio = 0
        while (now := time.monotonic()) - start < seconds:
            while start + video / ts.FPS <= now:
                data = pictures[video % len(pictures)]
                fanout.publish(VideoFrame(width, height, data, start + video / ts.FPS))
                video += 1
            while start + audio / 100 <= now:
                pcm = ts.audio_samples(audio * ts.AUDIO_FRAME_SAMPLES).tobytes()
                fanout.publish(AudioFrame(pcm, ts.SAMPLE_RATE, 1, start + audio / 100))
                audio += 1
            await asyncio.sleep(0.005)
        queued = len(rec._sub.queue) if rec._sub else 0
        began = time.perf_counter()
        final = await rec.stop()
        latency = time.perf_counter() - began
    return {
        "format": fmt,
        "size": f"{width}x{height}",
        "published": video,
        "written": final["framesWritten"],
        "video dropped": final["videoFramesDropped"],
        "audio dropped": final["audioFramesDropped"],
        "queued at stop": queued,
        "degraded": final["degraded"],
        "stop s": f"{latency:.2f}",
    }


def synthesize_parts(name: str, directory: Path, minutes: float, parts: int) -> list[Path]:
    """Parts of a `minutes`-long recording at medium quality, fast: 20 s of grainy pictures
    (which fill the bitrate, as a real stream does; the clean test pattern compresses far
    below it)
    and the test tone are encoded once by the recorder's PartWriter, then their packets are
    written again and again (timestamps shifted) into each part with the recorder's
    crash-safe container options, so the parts hold as many packets and bytes as real ones."""
    import av
    import numpy as np

    fmt, container = kind(name)
    written_as = resolve(fmt, container)
    ext = written_as.extension
    sample = directory / f"sample.{ext}"
    writer = PartWriter(sample, fmt, "medium", audio=True, max_width=None, container=container)
    rng = np.random.default_rng(1)
    size = ts.WIDTH * ts.HEIGHT * 3 // 2
    pattern = ts.VideoPattern()
    pictures = []
    for i in range(8):  # the test pattern under grain, about as costly as a camera's picture
        base = np.frombuffer(pattern.i420(i), np.uint8).astype(np.int16)
        grain = rng.integers(-12, 13, size, dtype=np.int16)
        pictures.append(np.clip(base + grain, 0, 255).astype(np.uint8).tobytes())
    for i in range(20 * ts.FPS):
        picture = pictures[i % len(pictures)]
        writer.write_video(VideoFrame(ts.WIDTH, ts.HEIGHT, picture, 1000 + i / ts.FPS))
        for a in range(i * 100 // ts.FPS, (i + 1) * 100 // ts.FPS):
            pcm = ts.audio_samples(a * ts.AUDIO_FRAME_SAMPLES).tobytes()
            writer.write_audio(AudioFrame(pcm, ts.SAMPLE_RATE, 1, 1000 + a / 100))
    writer.close()
    with av.open(str(sample)) as src:
        streams = [s for s in src.streams if s.type in ("video", "audio")]
        packets = [p for p in src.demux(*streams) if p.size and p.dts is not None]
        # Each copy starts a little after the last one ends (AAC priming reaches back).
        span = max(float((p.pts + p.duration) * p.stream.time_base) for p in packets) + 0.05
        paths = []
        for n in range(parts):
            path = directory / f"long-part{n + 1:03d}.{ext}"
            with av.open(
                str(path), "w", format=written_as.container,
                options=_container_options(written_as),
            ) as out:  # fmt: skip
                outs = {s.index: out.add_stream_from_template(s, opaque=True) for s in streams}
                for k in range(round(minutes * 60 / parts / span)):
                    for p in packets:
                        tb = p.stream.time_base
                        shift = round(k * span / tb)
                        copy = av.Packet(bytes(p))
                        copy.pts, copy.dts = p.pts + shift, p.dts + shift
                        copy.duration, copy.time_base = p.duration, tb
                        copy.is_keyframe = p.is_keyframe
                        copy.stream = outs[p.stream.index]
                        out.mux(copy)
            paths.append(path)
    sample.unlink()
    return paths


def join_time(fmt: str, minutes: float, parts: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="haven-join-", dir=Path.home()) as tmp:
        root = Path(tmp)
        (root / "long").mkdir()
        paths = synthesize_parts(fmt, root / "long", minutes, parts)
        infos = [PartInfo(path=str(p.relative_to(root))) for p in paths]
        size = sum(p.stat().st_size for p in paths)
        began = time.perf_counter()
        outcome = join_parts(root, "long", infos)
        seconds = time.perf_counter() - began
        assert outcome.error is None and outcome.results, outcome.error
        result = outcome.results[0]
    return {
        "format": fmt,
        "parts": parts,
        "minutes": f"{result.duration / 60:.1f}",
        "MB": f"{size / 1e6:.0f}",
        "kbit/s": f"{size * 8 / 1000 / result.duration:.0f}",
        "join s": f"{seconds:.1f}",
        "MB/s": f"{size / 1e6 / seconds:.0f}",
        "packets": result.packets,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--formats", nargs="*", default=["av1", "h264", "vp9"])
    p.add_argument("--stop-only", action="store_true", help="only the stop latency table")
    p.add_argument("--join-only", action="store_true", help="only the join table")
    p.add_argument("--join-minutes", type=float, default=60)
    p.add_argument("--join-parts", type=int, default=2)
    a = p.parse_args()
    if not a.stop_only and not a.join_only:
        per_format(a)
    if not a.join_only:
        print("\nstop latency, encoder slower than realtime (3840x2160 at 30 fps, high quality):")
        print_table([asyncio.run(stop_latency(fmt, 3840, 2160, 5)) for fmt in a.formats])
    if not a.stop_only:
        print(
            f"\njoin: {a.join_minutes:.0f} minutes of 720p30 at medium quality in "
            f"{a.join_parts} parts, remuxed into one seekable file and checked:"
        )
        print_table([join_time(fmt, a.join_minutes, a.join_parts) for fmt in a.formats])


def per_format(a: argparse.Namespace) -> None:
    rows = []
    with stack("--max-viewers", "0") as s:
        pid = s.pod.proc.pid
        for fmt in a.formats:
            base = measure(pid, 10)
            name = f"bench-{fmt}"
            recorded, container = kind(fmt)
            s.pod.start_recording(name=name, format=recorded, container=container, quality="medium")
            s.pod.wait_recording(name, "recording")
            busy = measure(pid, a.seconds)
            final = s.pod.stop_recording(name)
            report = analyze(s.pod.recordings / final["parts"][0]["path"])
            offsets = [o * 1000 for o in report.av_offsets()] or [float("nan")]
            rows.append(
                {
                    "format": fmt,
                    "base cores": f"{base.cpu_cores:.2f}",
                    "+cores": f"{busy.cpu_cores - base.cpu_cores:.2f}",
                    "RSS MB": f"{busy.rss_mb:.0f}",
                    "frames": final["framesWritten"],
                    "dropped": final["framesDropped"],
                    "seconds": f"{report.duration:.1f}",
                    "kbit/s": f"{final['bytesWritten'] * 8 / 1000 / max(report.duration, 1):.0f}",
                    "A/V median ms": f"{statistics.median(offsets):.0f}",
                    "A/V max ms": f"{max(abs(o) for o in offsets):.0f}",
                }
            )
    print_table(rows)


if __name__ == "__main__":
    main()
