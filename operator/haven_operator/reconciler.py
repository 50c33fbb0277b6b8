"""One pass of a LiveStream's reconciliation: look at every child, then write what differs.

Level-based: it reads the children as they are now, whatever changed them (a spec edit, a
user's `kubectl delete svc`, `kubectl scale`), and applies the whole desired state again.
It never writes an object this LiveStream does not own (ownership.py): such an object is left
untouched and the outcome names it. Blocking; the LiveStream's daemon runs it in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiException

from . import metrics, upload
from .children import claim, control_secret, deployment, ingress, names, service
from .conditions import Condition
from .kube import Kube, api_error
from .ownership import Owner, classify
from .rollout import CREDENTIALS_HASH, Gate, gate_deployment
from .settings import Settings


@dataclass(frozen=True)
class Outcome:
    generation: int
    ok: bool
    reason: str  # Applied, ChildConflict, PreviousOwner, ApplyFailed, ApiError, ...
    message: str
    token: str | None = None  # the control token, read or created on the way
    created_secret: bool = False
    retry_after: float | None = None  # waiting, not failing: look again this soon
    rollout_pending: str | None = None  # the new pod template waits for a rollout slot

    @property
    def condition(self) -> Condition:
        return Condition("Reconciled", self.ok, self.reason, self.message)


def _without_nulls(value: Any) -> Any:
    """The client drops null fields (a template's creationTimestamp); the watch keeps them."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def child_fingerprint(body: Mapping[str, Any]) -> str:
    """What an edit of a child changes: its spec, labels, annotations and owners (not status)."""
    meta = body.get("metadata", {})
    essence = {
        "spec": body.get("spec"),
        "labels": meta.get("labels"),
        "annotations": {
            k: v
            for k, v in (meta.get("annotations") or {}).items()
            if not k.startswith("deployment.kubernetes.io/")
        },
        "owners": meta.get("ownerReferences"),
    }
    text = json.dumps(_without_nulls(essence), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _token(secret: dict) -> str | None:
    data = (secret.get("data") or {}).get("token")
    return base64.b64decode(data).decode() if data is not None else None


def _blocked(kind: str, name: str, owner: Owner, ls_name: str) -> tuple[str, str]:
    if owner is Owner.PREVIOUS:
        return "PreviousOwner", (
            f"{kind} {name} still belongs to a deleted LiveStream {ls_name}; "
            "waiting for the garbage collector to remove it"
        )
    return "ChildConflict", (
        f"{kind} {name} exists and is not owned by this LiveStream; it is left untouched "
        "(delete or rename it, or rename the LiveStream)"
    )


def livekit_credentials_hash(kube: Kube, body: dict[str, Any]) -> str | None:
    """A hash of the LiveKit keys the pod reads from the user's Secret (env vars are read at
    start, so a change must roll the pod), or None for a source without them."""
    livekit = body["spec"]["source"].get("livekit")
    if not livekit:
        return None
    ref = livekit["credentialsSecretRef"]
    secret = kube.get("Secret", body["metadata"]["namespace"], ref["name"])
    if secret is None:
        return "missing"
    data = secret.get("data") or {}
    keys = (ref.get("apiKeyKey", "apiKey"), ref.get("apiSecretKey", "apiSecret"))
    return hashlib.sha256(json.dumps([data.get(k) for k in keys]).encode()).hexdigest()[:16]


def reconcile(
    kube: Kube,
    settings: Settings,
    body: dict[str, Any],
    seen: dict[str, str] | None = None,
    gate: Gate | None = None,
) -> Outcome:
    """`seen`: children's fingerprints by uid (the watch's memory). What we write goes in it at
    once, so the watch event of our own write does not wake the loop again. `gate`: rollout
    slots (rollout.py); without one a new pod template applies at once."""
    meta = body["metadata"]
    ls_name, namespace = meta["name"], meta["namespace"]
    generation = meta.get("generation", 1)
    n = names(ls_name)
    wanted_ingress = ingress(body, settings)
    try:
        # Look first: every child that exists must be ours before anything is written.
        existing = {
            kind: kube.get(kind, namespace, name)
            for kind, name in (
                ("Secret", n["secret"]),
                ("PersistentVolumeClaim", n["claim"]),
                ("Service", n["service"]),
                ("Deployment", n["deployment"]),
                ("Ingress", n["ingress"]),
            )
        }
        owners = {kind: classify(obj, body) for kind, obj in existing.items()}
        for kind, owner in owners.items():
            if owner in (Owner.FOREIGN, Owner.PREVIOUS):
                if kind == "Ingress" and wanted_ingress is None:
                    continue  # not ours and not wanted: nothing to do with it
                obj_name = existing[kind]["metadata"]["name"]
                reason, message = _blocked(kind, obj_name, owner, ls_name)
                metrics.RECONCILE_ERRORS.labels(kind=kind, reason=reason).inc()
                soon = 1.0 if owner is Owner.PREVIOUS else None
                return Outcome(generation, False, reason, message, retry_after=soon)

        created = False
        token = _token(existing["Secret"]) if existing["Secret"] else None
        if owners["Secret"] is Owner.MISSING:
            fresh = secrets.token_urlsafe(32)
            if kube.create_if_missing(control_secret(body, fresh)) is not None:
                # Made between our look and our create: look again on the next pass.
                message = f"Secret {n['secret']} just appeared"
                return Outcome(generation, False, "Retry", message, retry_after=1.0)
            token, created = fresh, True
        elif token is None:
            message = f"Secret {n['secret']} has no key 'token'; delete it to get a new one"
            metrics.RECONCILE_ERRORS.labels(kind="Secret", reason="InvalidSecret").inc()
            return Outcome(generation, False, "InvalidSecret", message)

        failures: list[tuple[str, str, str]] = []
        # Object storage keys: their hash goes in the pod template (a new key rolls the pod).
        # A missing Secret is reported, and the pod waits for it (its volume cannot mount).
        upload_hash = ""
        if (cfg := upload.effective(body, settings.default_upload)) is not None:
            ref = cfg["s3"]["credentialsSecretRef"]["name"]
            try:
                upload_hash = upload.credentials_hash(kube.get("Secret", namespace, ref), cfg)
            except upload.CredentialsError as exc:
                upload_hash = "missing"
                failures.append(("Secret", "UploadCredentials", str(exc)))
        manifests = [
            claim(body),
            service(body, settings),
            deployment(body, settings, token, upload_hash),
        ]
        dep = next(m for m in manifests if m["kind"] == "Deployment")
        if (livekit_keys := livekit_credentials_hash(kube, body)) is not None:
            dep["spec"]["template"]["metadata"]["annotations"][CREDENTIALS_HASH] = livekit_keys
        recording = bool((body.get("status") or {}).get("activeRecordings"))
        pending = gate_deployment(
            dep, existing["Deployment"], generation, (namespace, ls_name), gate, recording
        )
        if wanted_ingress is not None:
            manifests.append(wanted_ingress)
        for manifest in manifests:  # one failure does not hold back the other children
            try:
                written = kube.apply(manifest)
                if seen is not None and written:
                    seen[written["metadata"]["uid"]] = child_fingerprint(written)
            except ApiException as exc:
                reason, message = api_error(exc)
                kind = manifest["kind"]
                name = manifest["metadata"]["name"]
                failures.append((kind, reason, f"{kind} {name}: {reason}: {message}"))
        if wanted_ingress is None and owners["Ingress"] is Owner.OURS:
            ing = existing["Ingress"]["metadata"]
            kube.delete("Ingress", namespace, ing["name"], ing["uid"])
    except ApiException as exc:  # a read or the Secret's create
        reason, message = api_error(exc)
        metrics.RECONCILE_ERRORS.labels(kind="LiveStream", reason=reason).inc()
        return Outcome(generation, False, "ApiError", f"{reason}: {message}")
    if failures:
        for kind, reason, _ in failures:
            metrics.RECONCILE_ERRORS.labels(kind=kind, reason=reason).inc()
        kind, reason, message = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return Outcome(generation, False, "ApplyFailed", message + more, token, created)
    metrics.RECONCILES.labels(kind="LiveStream").inc()
    return Outcome(
        generation,
        True,
        "Applied",
        f"every child of generation {generation} is applied"
        + ("; the new pod template waits for a rollout slot" if pending else ""),
        token,
        created,
        rollout_pending=pending,
    )


def secret_unchanged(
    kube: Kube, body: dict[str, Any], token: str | None, settings: Settings | None = None
) -> bool:
    """The resync's light look at the Secrets, which no watch covers: True if the control
    Secret is still ours and holds the token the pod template was made with, and (with object
    storage) the credentials Secret still has the keys whose hash the Deployment's pod
    template carries."""
    if token is None:
        return False
    meta = body["metadata"]
    try:
        secret = kube.get("Secret", meta["namespace"], names(meta["name"])["secret"])
        if not (classify(secret, body) is Owner.OURS and _token(secret) == token):
            return False
        cfg = upload.effective(body, (settings or Settings.from_env()).default_upload)
        if cfg is None:
            return True
        ref = cfg["s3"]["credentialsSecretRef"]["name"]
        current = upload.credentials_hash(kube.get("Secret", meta["namespace"], ref), cfg)
        dep = kube.get("Deployment", meta["namespace"], names(meta["name"])["deployment"])
    except (ApiException, upload.CredentialsError):
        return False
    template = ((dep or {}).get("spec") or {}).get("template") or {}
    return (template.get("metadata") or {}).get("annotations", {}).get(
        upload.CREDENTIALS_HASH
    ) == current
