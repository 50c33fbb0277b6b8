"""Object storage: upload throughput to the local S3-compatible server (versitygw), and the
CPU an upload adds to a recording.

1. A finished 128 MiB part goes up through the stream pod's uploader (read, hash, multipart in
   8 MiB chunks, ListParts, complete, HEAD-verify): MB/s and the CPU cores it used.
2. A recording of 1280x720 noise at 30 fps (H.264 high, the fastest-growing file the encoder
   makes) for --seconds, in process, without and then with uploads while it records: the
   process's CPU cores in each, and the difference.

    .venv/bin/python bench/upload.py [--seconds 30] [--megabytes 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table

from haven_localcluster.s3server import S3Server
from haven_recorder.fanout import FanOut
from haven_recorder.frames import VideoFrame
from haven_recorder.recording import PartInfo, Recording, Recordings, RecordingSpec, RecordingState
from haven_recorder.upload import StorageSettings, Uploads

BUCKET = "bench-uploads"


def storage(server: S3Server) -> StorageSettings:
    return StorageSettings(
        bucket=BUCKET,
        endpoint=server.endpoint,
        force_path_style=True,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
    )


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def write_random(path: Path, megabytes: int) -> None:
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(os.urandom(1 << 20))


async def throughput(server: S3Server, megabytes: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="haven-upload-") as tmp:
        root = Path(tmp)
        (root / "bench").mkdir()
        path = root / "bench" / "bench-part001.mp4"
        write_random(path, megabytes)
        rec = Recording(RecordingSpec(name="bench"), root, FanOut())
        rec.progress.state = RecordingState.COMPLETED
        rec.progress.parts = [
            PartInfo(path="bench/bench-part001.mp4", sizeBytes=path.stat().st_size, endedAt="x")
        ]
        uploads = Uploads(storage(server))
        c0, t0 = cpu(), time.monotonic()
        uploads.attach(rec)
        assert rec.upload is not None and rec.upload.task is not None
        await rec.upload.task
        wall, used = time.monotonic() - t0, cpu() - c0
        await uploads.stop()
        assert rec.progress.parts[0].uploaded, rec.to_json()
    return {
        "file MiB": megabytes,
        "seconds": f"{wall:.2f}",
        "MB/s": f"{megabytes * (1 << 20) / 1e6 / wall:.0f}",
        "CPU cores": f"{used / wall:.2f}",
        "CPU s per GB": f"{used / (megabytes * (1 << 20) / 1e9):.1f}",
    }


async def record(server: S3Server | None, seconds: float) -> dict:
    rng = np.random.default_rng(5)
    picture = rng.integers(0, 256, 1280 * 720 * 3 // 2, dtype=np.uint8).tobytes()
    with tempfile.TemporaryDirectory(prefix="haven-upload-rec-") as tmp:
        fanout = FanOut()
        uploads = Uploads(storage(server)) if server else None
        recordings = Recordings(Path(tmp), fanout, uploads=uploads)
        spec = RecordingSpec(name="rec", format="h264", quality="high", audio=False)
        rec, _ = recordings.start(spec)
        start, n = time.monotonic(), 0
        c0 = cpu()
        while (now := time.monotonic()) - start < seconds:
            while start + n / 30 <= now:
                fanout.publish(VideoFrame(1280, 720, picture, start + n / 30))
                n += 1
            await asyncio.sleep(0.005)
        used, wall = cpu() - c0, time.monotonic() - start
        uploaded = rec.to_json().get("upload", {}).get("bytesUploaded", 0)  # before the join
        final = await rec.stop()
        if uploads is not None:
            await uploads.stop()
    return {
        "uploads": "on" if server else "off",
        "written MB": f"{final['bytesWritten'] / 1e6:.1f}",
        "uploaded while recording MB": f"{uploaded / 1e6:.1f}",
        "CPU cores": used / wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--megabytes", type=int, default=128)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="haven-s3-") as tmp:
        server = S3Server(Path(tmp))
        server.start()
        try:
            server.bucket(BUCKET)
            print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            first = asyncio.run(throughput(server, a.megabytes))
            print_table([first])
            rows = [asyncio.run(record(None, a.seconds)), asyncio.run(record(server, a.seconds))]
            extra = rows[1]["CPU cores"] - rows[0]["CPU cores"]
            for row in rows:
                row["CPU cores"] = f"{row['CPU cores']:.2f}"
            print_table(rows)
            print(f"extra CPU while uploading, measured: {extra:+.2f} cores (noisy under load)")
            rate = float(rows[1]["written MB"]) / a.seconds  # MB/s the recording wrote
            per_gb = float(first["CPU s per GB"])
            print(
                f"extra CPU while uploading, from the upload's own cost: {per_gb:.1f} CPU s/GB x "
                f"{rate:.2f} MB/s = {per_gb * rate / 1000:.4f} cores"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
