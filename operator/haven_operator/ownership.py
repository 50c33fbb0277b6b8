"""Whose object is it? Decided before every write, so the operator never takes over an object
a user (or another LiveStream) made under a child's name.

Pure functions of an existing object's metadata and the LiveStream."""

from __future__ import annotations

from enum import StrEnum

from .children import GROUP, LABEL, MANAGER


class Owner(StrEnum):
    MISSING = "missing"  # nothing there: create it
    OURS = "ours"  # this LiveStream's child: apply over it
    PREVIOUS = "previous"  # a deleted LiveStream of the same name's: wait for the collector
    FOREIGN = "foreign"  # someone else's: leave it untouched


def _livestream_refs(meta: dict) -> list[dict]:
    return [
        ref
        for ref in meta.get("ownerReferences") or []
        if ref.get("kind") == "LiveStream" and ref.get("apiVersion", "").startswith(f"{GROUP}/")
    ]


def classify(existing: dict | None, livestream: dict) -> Owner:
    """How the object `existing` (or None) relates to the LiveStream `livestream`."""
    if existing is None:
        return Owner.MISSING
    meta = existing.get("metadata") or {}
    ls_meta = livestream["metadata"]
    refs = _livestream_refs(meta)
    if any(ref.get("uid") == ls_meta["uid"] for ref in refs):
        return Owner.OURS
    if any(ref.get("name") == ls_meta["name"] for ref in refs):
        return Owner.PREVIOUS
    if meta.get("ownerReferences"):
        return Owner.FOREIGN  # owned by something else entirely
    # A claim kept by reclaimPolicy Retain has no owner: ours if we made it for this name.
    labels = meta.get("labels") or {}
    if (
        existing.get("kind") == "PersistentVolumeClaim"
        and labels.get(LABEL) == ls_meta["name"]
        and labels.get("app.kubernetes.io/managed-by") == MANAGER
    ):
        return Owner.OURS
    return Owner.FOREIGN
