"""What the watches keep in memory (kopf indices), so a LiveStream's status needs no reads:
its stream pods and its claim's phase. kopf fills every index before any handler or daemon
runs, so a freshly started operator never mistakes "not listed yet" for "gone"."""

from __future__ import annotations

from typing import Any

import kopf

from .children import LABEL
from .pods import PodView

CHILD = {"labels": {LABEL: kopf.PRESENT}}


@kopf.index("v1", "pods", **CHILD)
async def stream_pods(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    """(namespace, LiveStream) -> its pods."""
    return {(namespace, labels[LABEL]): PodView.of(body)}


@kopf.index("v1", "persistentvolumeclaims", **CHILD)
async def stream_claims(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
    """(namespace, claim) -> its phase."""
    return {(namespace, name): (body.get("status") or {}).get("phase")}


def pods_of(index: kopf.Index, namespace: str, livestream: str) -> list[PodView]:
    return list(index.get((namespace, livestream), []))


def claim_phase(index: kopf.Index, namespace: str, claim: str) -> str | None:
    return next(iter(index.get((namespace, claim), [])), None)
