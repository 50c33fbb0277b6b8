"""Cut an interrupted part back to what plays, and make files durable.

A part that a crash or a full disk interrupted ends partway through a fragment. Matroska
demuxers read such a tail up to where it stops, but FFmpeg's MP4 demuxer fails on it: at the
first sample past the end, or at open if the cut fell inside a `moof`. Only the unfinished
fragment (under a second of media) is lost by cutting it off.

MPEG-TS needs no such cut: it is a run of 188-byte packets, each read on its own, and a
demuxer resynchronizes on the next. Only a packet the crash left partly written is cut off;
the frame whose packets stop there is decoded as far as it goes, or skipped.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

# Top-level boxes that our fragmented MP4 muxer writes (and ones a reader may skip).
_TOP_LEVEL = {b"ftyp", b"moov", b"moof", b"mdat", b"mfra", b"free", b"skip", b"styp", b"sidx"}


def boxes(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(offset, size, type) of each whole top-level box, up to the first cut short or invalid."""
    size = path.stat().st_size
    offset = 0
    with open(path, "rb") as f:
        while offset + 8 <= size:
            f.seek(offset)
            box_size, kind = struct.unpack(">I4s", f.read(8))
            if box_size == 1:  # a 64-bit size follows the type
                if offset + 16 > size:
                    return
                (box_size,) = struct.unpack(">Q", f.read(8))
            if kind not in _TOP_LEVEL or box_size < 8 or offset + box_size > size:
                return  # cut short, or not a box at all: the unfinished tail starts here
            yield offset, box_size, kind
            offset += box_size


def whole_fragments_end(path: Path) -> int:
    """The byte offset after the last box that ends a whole fragment (or the header)."""
    end = 0
    open_fragment = False  # a moof read whose mdat has not (yet) been
    for offset, size, kind in boxes(path):
        if kind == b"moof":
            open_fragment = True
        elif kind == b"mdat" or not open_fragment:
            open_fragment = False
            end = offset + size
    return end


def trim_unfinished(path: Path) -> int:
    """Cut off what an interrupted writer left unfinished at the end of `path`, by its
    container (the suffix): MP4 to its last whole fragment, TS to its last whole packet, WebM
    not at all. Returns the bytes cut (0 if none)."""
    if path.suffix == ".ts":
        return trim_to_whole_packets(path)
    return trim_to_whole_fragments(path)


TS_PACKET = 188


def trim_to_whole_packets(path: Path) -> int:
    """Truncate an MPEG-TS file to whole 188-byte packets; returns the bytes cut."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    end = size - size % TS_PACKET
    if end == size:
        return 0
    os.truncate(path, end)
    fsync_path(path)
    return size - end


def trim_to_whole_fragments(path: Path) -> int:
    """Truncate `path` after its last whole fragment; returns the bytes cut (0 if none)."""
    if path.suffix != ".mp4" or not path.exists():
        return 0
    size, end = path.stat().st_size, whole_fragments_end(path)
    if end >= size:
        return 0
    os.truncate(path, end)
    fsync_path(path)
    return size - end


def fsync_path(path: Path) -> None:
    """Flush a file and its directory entry to the disk (blocking: call it off the loop)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
