"""Prometheus metrics of the stream pod, served at GET /metrics on the control port."""

from __future__ import annotations

from prometheus_client import Counter, Enum, Gauge, Histogram

FRAMES_IN = Counter("haven_frames_in_total", "Frames received from LiveKit", ["kind"])
FRAMES_OUT = Counter(
    "haven_frames_out_total", "Frames a handler delivered (sent or written)", ["handler"]
)
FRAMES_DROPPED = Counter(
    "haven_frames_dropped_total", "Frames a handler's full queue dropped", ["handler"]
)
VIEWERS = Gauge("haven_viewers", "Connected WebSocket viewers")
ENCODE_SECONDS = Histogram(
    "haven_encode_seconds",
    "Time to encode one video frame",
    ["encoder"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32),
)
BYTES_WRITTEN = Counter("haven_recording_bytes_written_total", "Bytes written", ["recording"])
STREAM_STATE = Enum(
    "haven_stream_state",
    "Connection state of the stream",
    states=["connecting", "live", "offline", "reconnecting", "stopped"],
)
TASK_FAILURES = Counter(
    "haven_pod_task_failures",  # exposed as haven_pod_task_failures_total
    "Core tasks that died (the pod's /healthz then fails and the kubelet restarts it)",
    ["task"],
)
LOOP_ERRORS = Counter(
    "haven_pod_loop_errors",  # exposed as haven_pod_loop_errors_total
    "Errors a core loop caught, logged and carried on from (the item was skipped)",
    ["loop"],
)
