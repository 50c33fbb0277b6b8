"""Per format at medium quality: the CPU cores a recording adds to the stream pod, frames
dropped over the recording, and the A/V offset measured from the flash-and-beep markers.

    .venv/bin/python bench/recording.py [--seconds 60] [--formats av1 h264 vp9]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import measure, print_table, stack

from haven_localcluster.mediacheck import analyze


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--formats", nargs="*", default=["av1", "h264", "vp9"])
    a = p.parse_args()
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
