"""What `/api/recording/formats` lists: the Recording CRD's formats and qualities, with the
encoders and containers the stream pod uses for them (recorder/haven_recorder/writer.py; a
test keeps the two in step)."""

from __future__ import annotations

FORMATS = {
    "av1": {"container": "webm", "video_codec": "libsvtav1", "audio_codec": "libopus"},
    "h264": {"container": "mp4", "video_codec": "libx264", "audio_codec": "aac"},
    "vp9": {"container": "webm", "video_codec": "libvpx-vp9", "audio_codec": "libopus"},
}
QUALITIES = ("low", "medium", "high")
