"""What `/api/recording/formats` lists, and how a client's `output_format` maps to a
Recording's `format` (and `container`).

The Recording formats are the stream pod's (recorder/haven_recorder/writer.py; a test keeps the
two in step). Haven Player's revisions sent other names as `output_format`: its first backend
took codecs (av1, h264, vp9), later ones containers (mp4, mpegts, webm) and encoder names. Each
maps to the Recording format that gives the same codec, in the container it names:

    output_format               Recording format, container   file
    av1, svtav1, libsvtav1      av1                           WebM: AV1 + Opus
    h264, libx264, mp4          h264                          fragmented MP4: H.264 + AAC
    mpegts                      h264, container mpegts        MPEG-TS (.ts): H.264 + AAC
    vp9, libvpx-vp9, webm       vp9                           WebM: VP9 + Opus
"""

from __future__ import annotations

from typing import Any

# The Recording CRD's formats, as the stream pod writes them.
FORMATS = {
    "av1": {
        "container": "webm",
        "containers": ["webm"],
        "video_codec": "libsvtav1",
        "audio_codec": "libopus",
    },
    "h264": {
        "container": "mp4",
        "containers": ["mp4", "mpegts"],
        "video_codec": "libx264",
        "audio_codec": "aac",
    },
    "vp9": {
        "container": "webm",
        "containers": ["webm"],
        "video_codec": "libvpx-vp9",
        "audio_codec": "libopus",
    },
}
QUALITIES = ("low", "medium", "high")
# The pod's video bitrate per format and quality (kbit/s at 1280x720; it scales with the
# pixel count) and its audio bitrate per quality.
VIDEO_KBPS = {
    "av1": {"low": 800, "medium": 1500, "high": 3000},
    "h264": {"low": 1200, "medium": 2500, "high": 5000},
    "vp9": {"low": 800, "medium": 1500, "high": 3000},
}
AUDIO_KBPS = {"low": 64, "medium": 96, "high": 128}

# Every output_format a Haven Player revision sent, and the Recording format it becomes.
OUTPUT_FORMATS = {
    "av1": "av1",
    "svtav1": "av1",
    "libsvtav1": "av1",
    "h264": "h264",
    "libx264": "h264",
    "mp4": "h264",
    "mpegts": "h264",
    "vp9": "vp9",
    "libvpx-vp9": "vp9",
    "webm": "vp9",
}
# An output_format that names a container other than its Recording format's own.
OUTPUT_CONTAINERS = {"mpegts": "mpegts"}
DESCRIPTIONS = {
    "av1": "AV1 video and Opus audio in WebM (recommended: smallest files)",
    "svtav1": "the same as av1 (SVT-AV1 is the encoder)",
    "libsvtav1": "the same as av1",
    "h264": "H.264 video and AAC audio in fragmented MP4 (plays everywhere)",
    "libx264": "the same as h264",
    "mp4": "the same as h264",
    "mpegts": "H.264 video and AAC audio in MPEG-TS (.ts: crash-safe, plays as it grows)",
    "vp9": "VP9 video and Opus audio in WebM",
    "libvpx-vp9": "the same as vp9",
    "webm": "the same as vp9 (WebM with VP9 and Opus)",
}


def recording_format(output_format: str) -> str:
    return OUTPUT_FORMATS[output_format]


def recording_spec(output_format: str) -> dict[str, str]:
    """The Recording's `format`, and its `container` if not the format's own."""
    spec = {"format": OUTPUT_FORMATS[output_format]}
    if output_format in OUTPUT_CONTAINERS:
        spec["container"] = OUTPUT_CONTAINERS[output_format]
    return spec


def container_of(fmt: str, container: str | None = None) -> str:
    """The container a Recording of `fmt` is written in (`container`: its spec's, if set)."""
    return container if container in FORMATS[fmt]["containers"] else FORMATS[fmt]["container"]


def config(fmt: str, quality: str, container: str | None = None) -> dict[str, Any]:
    """A recording's encoder settings, named as Haven Player's backend named them."""
    f = FORMATS[fmt]
    return {
        "video_codec": f["video_codec"],
        "audio_codec": f["audio_codec"],
        "video_bitrate": f"{VIDEO_KBPS[fmt][quality]}k",
        "audio_bitrate": f"{AUDIO_KBPS[quality]}k",
        "format": container_of(fmt, container),
    }


def listing() -> dict[str, Any]:
    """GET /api/recording/formats: Haven Player's shape (`formats` keyed by output_format with
    description, codec and container; `quality_presets` keyed by quality with video_bitrate and
    audio_bitrate), plus what each maps to."""
    formats = {}
    for name, fmt in OUTPUT_FORMATS.items():
        f = FORMATS[fmt]
        formats[name] = {
            "description": DESCRIPTIONS[name],
            "codec": f["video_codec"],
            "container": container_of(fmt, OUTPUT_CONTAINERS.get(name)),
            "video_codec": f["video_codec"],
            "audio_codec": f["audio_codec"],
            "recording_format": fmt,
        }
    presets = {
        q: {
            # Haven Player showed one video bitrate per quality: the default format's (av1)
            "video_bitrate": f"{VIDEO_KBPS['av1'][q]}k",
            "audio_bitrate": f"{AUDIO_KBPS[q]}k",
            "video_bitrate_by_format": {fmt: f"{VIDEO_KBPS[fmt][q]}k" for fmt in FORMATS},
            "resolution": "the source's (bitrates are for 1280x720 and scale with pixels)",
        }
        for q in QUALITIES
    }
    return {
        "success": True,
        "formats": formats,
        "quality_presets": presets,
        "recording_formats": FORMATS,
        "qualities": list(QUALITIES),
    }
