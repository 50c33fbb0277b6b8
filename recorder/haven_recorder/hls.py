"""HLS from the shared viewer encoder (`--hls`, `spec.viewer.hls`): fMP4 segments and a live
playlist, written by FFmpeg's HLS muxer in a thread of its own, served on the viewer port
under /hls/.

The packets are the very ones `mode=video` viewers get (H.264 + Opus from videohub.py): no
second encode. With HLS on, keyframes come every second, so segments are 1 s (a segment ends
at every keyframe), each independent. The playlist holds LIST_SIZE
segments with EXT-X-PROGRAM-DATE-TIME; older segments are deleted as new ones come (FFmpeg's
`delete_segments`), so the directory holds at most about LIST_SIZE + 2 segments.

The thread's queue is bounded in bytes: when the muxer falls behind, packets are dropped and
the video resumes at the next keyframe. A change of picture size starts a new run: a new
init segment and playlist (files of a run are named after it), the old run's files removed.
"""

from __future__ import annotations

import io
import logging
import queue
import re
import shutil
import threading
from fractions import Fraction
from pathlib import Path

import av

from . import metrics
from .health import contained
from .videoenc import OPUS_RATE, Encoded

log = logging.getLogger("haven.hls")

SEGMENT_SECONDS = 0.95  # FFmpeg cuts at the first keyframe past this: every keyframe
KEYFRAME_SECONDS = 1.0  # what the shared encoder uses while HLS is on
LIST_SIZE = 6
PLAYLIST = "index.m3u8"
MAX_QUEUE_BYTES = 4 << 20
FILE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\.(m3u8|m4s|mp4)$")
CONTENT_TYPES = {
    "m3u8": "application/vnd.apple.mpegurl",
    "m4s": "video/iso.segment",
    "mp4": "video/mp4",
}


def _clear(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


class HlsWriter:
    def __init__(self, directory: Path, *, audio: bool, channels: int) -> None:
        self.directory = directory
        self.audio = audio
        self.channels = channels
        self._queue: queue.SimpleQueue[Encoded | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued_bytes = 0
        self._resync = True  # video waits for a keyframe (at the start, and after a drop)
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.segments = 0
        # thread-side
        self._out: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._audio_stream: av.AudioStream | None = None
        self._origin = 0.0
        self._size: tuple[int, int] | None = None
        self._run = 0
        self._last_video_pts = -1
        self._last_audio_pts = -1

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _clear(self.directory)  # a previous pod's segments: not this stream's timeline
        self._thread = threading.Thread(target=self._loop, name="hls", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    # -- on the event loop ------------------------------------------------------------------

    def offer(self, e: Encoded) -> None:
        """Take a packet (never blocks); a video packet past the bound drops the video until
        the next keyframe, audio past it is dropped alone."""
        if e.video:
            if e.keyframe:
                self._resync = False
            elif self._resync:
                return
        with self._lock:
            if self._queued_bytes + len(e.data) > MAX_QUEUE_BYTES:
                self.dropped += 1
                metrics.FRAMES_DROPPED.labels(handler="hls").inc()
                if e.video:
                    self._resync = True
                return
            self._queued_bytes += len(e.data)
        self._queue.put(e)

    # -- in the thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            e = self._queue.get()
            if e is None:
                break
            with self._lock:
                self._queued_bytes -= len(e.data)
            try:
                self._write(e)
            except Exception as exc:  # the next keyframe starts a new run
                contained("hls", exc, "writing HLS failed; starting again at the next keyframe")
                self._close()
        self._close()

    def _open(self, key: Encoded) -> None:
        self._close()
        _clear(self.directory)
        self._run += 1
        with av.open(io.BytesIO(key.data), format="h264") as parsed:  # SPS/PPS -> extradata
            template = parsed.streams.video[0]
            out = av.open(
                str(self.directory / PLAYLIST),
                "w",
                format="hls",
                options={
                    "hls_time": str(SEGMENT_SECONDS),
                    "hls_list_size": str(LIST_SIZE),
                    "hls_segment_type": "fmp4",
                    "hls_fmp4_init_filename": f"init-{self._run}.mp4",
                    "hls_segment_filename": str(self.directory / f"seg-{self._run}-%06d.m4s"),
                    "hls_flags": "delete_segments+program_date_time+independent_segments+temp_file",
                    "hls_delete_threshold": "2",
                },
            )
            try:
                video = out.add_stream_from_template(template)
                video.time_base = Fraction(1, 1000)
                audio = None
                if self.audio:
                    audio = out.add_stream("libopus", rate=OPUS_RATE)
                    audio.layout = "mono" if self.channels == 1 else "stereo"
                    audio.time_base = Fraction(1, OPUS_RATE)
                out.start_encoding()
            except BaseException:
                out.close()
                raise
        self._out, self._video, self._audio_stream = out, video, audio
        self._origin = key.pts
        self._size = (key.width, key.height)
        self._last_video_pts = self._last_audio_pts = -1
        log.info("HLS run %d: %dx%d in %s", self._run, key.width, key.height, self.directory)

    def _write(self, e: Encoded) -> None:
        if e.video and e.keyframe and (self._out is None or self._size != (e.width, e.height)):
            self._open(e)
        if self._out is None:
            return  # audio or pictures before the first keyframe
        if e.video:
            stream, scale, last = self._video, 1000, self._last_video_pts
        elif self._audio_stream is not None:
            stream, scale, last = self._audio_stream, OPUS_RATE, self._last_audio_pts
        else:
            return
        pts = round((e.pts - self._origin) * scale)
        if pts < 0 or pts <= last:
            return
        packet = av.Packet(e.data)
        packet.stream = stream
        packet.time_base = Fraction(1, scale)
        packet.pts = packet.dts = pts
        if e.video:
            packet.is_keyframe = e.keyframe
            self._last_video_pts = pts
        else:
            packet.duration = round(e.duration * scale)
            self._last_audio_pts = pts
        self._out.mux(packet)

    def _close(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            try:
                out.close()
            except Exception as exc:
                contained("hls", exc, "closing the HLS muxer failed")


def read(writer: HlsWriter | None, name: str) -> tuple[bytes, str] | None:
    """A file of the live HLS output and its content type, or None (not one, or gone). Runs in
    a worker thread (it reads a file)."""
    if writer is None or not FILE_NAME.match(name):
        return None
    try:
        return (writer.directory / name).read_bytes(), CONTENT_TYPES[name.rsplit(".", 1)[1]]
    except (FileNotFoundError, IsADirectoryError):
        return None
