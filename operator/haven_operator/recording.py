"""Recording handlers: a daemon per Recording waits for its LiveStream to be live, starts the
recording through the stream pod's API (idempotently, so it is safe to repeat), mirrors the
pod's progress into `status`, and stops it when asked; a finalizer finalizes the file before a
Recording is deleted."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import kopf

from . import conditions, metrics
from .children import GROUP, VERSION, names
from .conditions import Condition
from .podclient import PodRejected, PodUnreachable, RecordingRequest
from .pods import client_for, current_pod
from .settings import Settings

PLURAL = "recordings"
INTERVAL = Settings.from_env().status_interval
POD_PHASES = {
    "starting": "Starting",
    "recording": "Recording",
    "stopping": "Stopping",
    "completed": "Completed",
    "failed": "Failed",
}
FINAL = ("Completed", "Failed")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s)")


def parse_duration(text: str | None) -> float | None:
    """'1h30m' -> 5400.0 (the CRD's pattern has already checked the syntax)."""
    if not text:
        return None
    unit = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * unit[u] for n, u in _DURATION.findall(text))


def request_for(name: str, spec: dict) -> RecordingRequest:
    return RecordingRequest(
        name=name,
        format=spec.get("format", "av1"),
        quality=spec.get("quality", "medium"),
        audio=spec.get("audio", True),
        max_width=spec.get("maxWidth"),
        max_fps=spec.get("maxFps"),
        max_duration_seconds=parse_duration(spec.get("maxDuration")),
    )


def from_pod(info: dict, claim: str, pod_uid: str | None) -> dict[str, Any]:
    """The pod's view of a recording, in the Recording's status fields."""
    return {
        "phase": POD_PHASES.get(info["state"], "Pending"),
        "claimName": claim,
        "files": info["parts"],
        "bytesWritten": info["bytesWritten"],
        "durationSeconds": info["durationSeconds"],
        "framesWritten": info["framesWritten"],
        "framesDropped": info["framesDropped"],
        "videoCodec": info["videoCodec"],
        "audioCodec": info["audioCodec"],
        "startedAt": info["startedAt"],
        "stoppedAt": info["stoppedAt"],
        "podUID": pod_uid,
        "message": info["error"] or info["reason"],
    }


class Reconciler:
    """One Recording's loop; `step` is level-based: it looks, acts once, and reports."""

    def __init__(self, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger) -> None:
        self.body, self.memo, self.logger = body, memo, logger
        self.kube, self.settings = memo.kube, memo.settings
        self.name = body["metadata"]["name"]
        self.namespace = body["metadata"]["namespace"]

    def _write(self, status: dict[str, Any], updates: list[Condition]) -> None:
        current = self.body.get("status", {})
        generation = self.body["metadata"].get("generation", 1)
        status = {
            **status,
            "observedGeneration": generation,
            "conditions": conditions.merge(current.get("conditions"), updates, generation),
        }
        if all(current.get(k) == v for k, v in status.items()):
            return  # nothing changed: no write
        if status.get("phase") != current.get("phase"):
            reason = next((c.reason for c in updates if c.type == "Recording"), status.get("phase"))
            emit = kopf.warn if status.get("phase") == "Failed" else kopf.info
            emit(
                dict(self.body),
                reason=reason,
                message=f"{current.get('phase')} -> {status['phase']}",
            )
        self.kube.patch_status(PLURAL, self.namespace, self.name, status)

    async def step(self) -> bool:
        """Return True once the recording is over (nothing more to do)."""
        spec, status = self.body["spec"], self.body.get("status", {})
        if status.get("phase") in FINAL:
            return True
        ls_name = spec["liveStreamRef"]["name"]
        ls = await asyncio.to_thread(self.kube.livestream, self.namespace, ls_name)
        started = status.get("phase") in ("Starting", "Recording", "Stopping")
        if ls is None:
            cond = Condition(
                "LiveStreamReady", False, "LiveStreamNotFound", f"no LiveStream {ls_name} here"
            )
            if spec.get("stopped"):
                await asyncio.to_thread(
                    self._write, {"phase": "Completed", "message": "stopped"}, [cond]
                )
                return True
            await asyncio.to_thread(
                self._write, {"phase": status.get("phase") or "Pending"}, [cond]
            )
            return False
        ls_phase = ls.get("status", {}).get("phase")
        if not started and not spec.get("stopped") and ls_phase != "Live":
            cond = Condition(
                "LiveStreamReady",
                False,
                "LiveStreamNotLive",
                f"LiveStream {ls_name} is {ls_phase or 'Pending'}",
            )
            await asyncio.to_thread(
                self._write, {"phase": "Pending"}, [cond, Condition("Recording", False, "Waiting")]
            )
            return False

        pods = await asyncio.to_thread(self.kube.stream_pods, self.namespace, ls_name)
        pod = current_pod(pods)
        client = await asyncio.to_thread(
            client_for, self.kube, self.settings, self.namespace, ls_name, pod
        )
        if client is None:
            return False
        try:
            if spec.get("stopped"):
                info = await client.stop_recording(self.name)
            else:
                info = await client.start_recording(request_for(self.name, spec))
        except PodUnreachable as exc:
            self.logger.info("stream pod unreachable: %s", exc)
            return False
        except PodRejected as exc:
            cond = Condition("Recording", False, "Rejected", exc.detail[:500])
            await asyncio.to_thread(
                self._write, {"phase": "Failed", "message": exc.detail[:500]}, [cond]
            )
            return True
        claim = names(ls_name)["claim"]
        if info is None:  # stopped before the pod ever had it
            new = {"phase": "Completed", "claimName": claim, "message": "stopped before it started"}
        else:
            new = from_pod(info, claim, pod.metadata.uid if pod is not None else None)
        phase = new["phase"]
        recording = Condition(
            "Recording",
            phase == "Recording",
            info["reason"] if info else "Stopped",
            new.get("message") or "",
        )
        live = Condition(
            "LiveStreamReady", ls_phase == "Live", ls_phase or "Pending", f"LiveStream {ls_name}"
        )
        await asyncio.to_thread(self._write, new, [recording, live])
        metrics.RECONCILES.labels(kind="Recording").inc()
        return phase in FINAL


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def run(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    reconciler = Reconciler(body, memo, logger)
    while not stopped:
        try:
            if await reconciler.step():
                return
        except Exception:  # keep the loop alive: the next step retries
            logger.exception("recording step failed")
            metrics.ERRORS.labels(kind="Recording").inc()
        await stopped.wait(INTERVAL)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def finalize(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Finalize the file before the Recording goes; the file stays on the volume."""
    if body.get("status", {}).get("phase") in FINAL:
        return
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    ls_name = body["spec"]["liveStreamRef"]["name"]
    client = await asyncio.to_thread(client_for, memo.kube, memo.settings, ns, ls_name)
    if client is None:
        return
    try:
        await client.stop_recording(name)
    except (PodUnreachable, PodRejected) as exc:
        logger.warning("could not finalize %s on its pod: %s", name, exc)
