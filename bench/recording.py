"""Per format at medium quality: the CPU cores a recording adds to the stream pod, frames
dropped over the recording, and the A/V offset measured from the flash-and-beep markers.
Then the stop latency with an encoder slower than realtime (4K at high quality, in process):
how long `stop` takes with a backlog queued, and what it dropped.

    .venv/bin/python bench/recording.py [--seconds 60] [--formats av1 h264 vp9]
    .venv/bin/python bench/recording.py --stop-only
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
from haven_recorder.recording import Recording, RecordingSpec


async def stop_latency(fmt: str, width: int, height: int, seconds: float) -> dict:
    """Publish width x height at 30 fps with audio in real time to one recording for
    `seconds`, then stop it: the encoder cannot keep up, so a backlog is queued."""
    pattern = ts.VideoPattern(width, height)
    pictures = [pattern.i420(i) for i in range(8)]
    with tempfile.TemporaryDirectory(prefix="haven-stop-") as tmp:
        fanout = FanOut()
        spec = RecordingSpec(name="stop", format=fmt, quality="high")
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--formats", nargs="*", default=["av1", "h264", "vp9"])
    p.add_argument("--stop-only", action="store_true", help="only the stop latency table")
    a = p.parse_args()
    if not a.stop_only:
        per_format(a)
    print("\nstop latency, encoder slower than realtime (3840x2160 at 30 fps, high quality):")
    print_table([asyncio.run(stop_latency(fmt, 3840, 2160, 5)) for fmt in a.formats])


def per_format(a: argparse.Namespace) -> None:
    rows = []
    with stack("--max-viewers", "0") as s:
        pid = s.pod.proc.pid
        for fmt in a.formats:
            base = measure(pid, 10)
            name = f"bench-{fmt}"
            s.pod.start_recording(name=name, format=fmt, quality="medium")
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
