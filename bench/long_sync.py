"""A/V sync over a long recording (default 10 minutes) in AV1 and H.264: the offset between
each flash and its tone, its per-minute medians and its trend.

    .venv/bin/python bench/long_sync.py [--seconds 600]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import stack

from haven_localcluster.mediacheck import analyze, sync_summary


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=600)
    a = p.parse_args()
    formats = ("av1", "h264")
    with stack() as s:
        for fmt in formats:
            s.pod.start_recording(name=f"long-{fmt}", format=fmt)
        time.sleep(a.seconds)
        finals = {fmt: s.pod.stop_recording(f"long-{fmt}") for fmt in formats}
        for fmt, final in finals.items():
            report = analyze(s.pod.recordings / final["parts"][0]["path"])
            print(
                f"{fmt}: {sync_summary(report.av_pairs())}; {report.duration:.0f}s, "
                f"{report.inferred_flashes} flashes inferred, {final['framesDropped']} dropped, "
                f"decode error {report.error}"
            )


if __name__ == "__main__":
    main()
