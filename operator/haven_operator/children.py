"""The objects a LiveStream owns, as manifests: pure functions of the LiveStream and the
operator's settings, applied with server-side apply (so applying twice changes nothing)."""

from __future__ import annotations

import hashlib
from typing import Any

from . import upload
from .settings import Settings

GROUP = "streams.haven.dev"
VERSION = "v1alpha1"
MANAGER = "haven-operator"
RECORDINGS_DIR = "/recordings"
POD_USER = 10001
LABEL = f"{GROUP}/livestream"
TOKEN_HASH = f"{GROUP}/control-token-hash"  # pod template annotation: a new token rolls the pod


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def names(livestream: str) -> dict[str, str]:
    return {
        "deployment": f"{livestream}-stream",
        "service": f"{livestream}-stream",
        "claim": f"{livestream}-recordings",
        "secret": f"{livestream}-control",
        "ingress": f"{livestream}-stream",
    }


def labels(livestream: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "haven-stream",
        "app.kubernetes.io/instance": livestream,
        "app.kubernetes.io/component": "stream-pod",
        "app.kubernetes.io/managed-by": MANAGER,
        LABEL: livestream,
    }


def owner_reference(body: dict) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LiveStream",
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(body: dict, name: str, owned: bool = True) -> dict[str, Any]:
    ls = body["metadata"]["name"]
    meta: dict[str, Any] = {
        "name": name,
        "namespace": body["metadata"]["namespace"],
        "labels": labels(ls),
    }
    if owned:
        meta["ownerReferences"] = [owner_reference(body)]
    return meta


def control_secret(body: dict, token: str) -> dict[str, Any]:
    """The bearer token the operator uses on the pod's control API."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(body, names(body["metadata"]["name"])["secret"]),
        "type": "Opaque",
        "stringData": {"token": token},
    }


def claim(body: dict) -> dict[str, Any]:
    storage = body["spec"].get("storage", {})
    # With Retain the claim has no owner, so deleting the LiveStream leaves the recordings.
    retain = storage.get("reclaimPolicy", "Retain") == "Retain"
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": str(storage.get("size", "10Gi"))}},
    }
    if storage.get("storageClassName"):
        spec["storageClassName"] = storage["storageClassName"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(body, names(body["metadata"]["name"])["claim"], owned=not retain),
        "spec": spec,
    }


def service(body: dict, settings: Settings) -> dict[str, Any]:
    ls = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(body, names(ls)["service"]),
        "spec": {
            "selector": {f"{GROUP}/livestream": ls},
            "ports": [
                {"name": "http", "port": settings.pod_port, "targetPort": "http"},
                {"name": "control", "port": settings.control_port, "targetPort": "control"},
            ],
        },
    }


def _env(body: dict, settings: Settings) -> list[dict[str, Any]]:
    spec, ls = body["spec"], body["metadata"]["name"]
    viewer = spec.get("viewer", {})
    env: list[dict[str, Any]] = [
        {"name": "HAVEN_HOST", "value": "0.0.0.0"},
        {"name": "HAVEN_PORT", "value": str(settings.pod_port)},
        {"name": "HAVEN_CONTROL_PORT", "value": str(settings.control_port)},
        {"name": "HAVEN_RECORDINGS_DIR", "value": RECORDINGS_DIR},
        {"name": "HAVEN_LOG_FORMAT", "value": "json"},
        {"name": "HAVEN_MAX_VIEWERS", "value": str(viewer.get("maxViewers", 100))},
        {"name": "HAVEN_MAX_FPS", "value": str(viewer.get("maxFps", 15))},
        {"name": "HAVEN_MAX_WIDTH", "value": str(viewer.get("maxWidth", 1280))},
        {"name": "HAVEN_JPEG_QUALITY", "value": str(viewer.get("jpegQuality", 75))},
        {"name": "HAVEN_AUDIO", "value": str(viewer.get("audio", True)).lower()},
        {"name": "HAVEN_HLS", "value": str(viewer.get("hls", False)).lower()},
        {"name": "HAVEN_HLS_DIR", "value": "/tmp/hls"},  # the tmp emptyDir: a few MB
        {
            "name": "HAVEN_CONTROL_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": names(ls)["secret"], "key": "token"}},
        },
    ]
    if auth := viewer.get("auth"):  # the page and the WebSocket then need ?token=
        key = {"name": auth["secretRef"]["name"], "key": auth["secretRef"].get("key", "token")}
        env.append({"name": "HAVEN_VIEWER_TOKEN", "valueFrom": {"secretKeyRef": key}})
    ingress_path = viewer.get("ingress", {}).get("path", "/")
    if ingress_path.strip("/"):  # the pod serves viewers under it too: no rewrite needed
        env.append({"name": "HAVEN_VIEWER_PATH", "value": ingress_path})
    if spec.get("videoTrack"):
        env.append({"name": "HAVEN_VIDEO_TRACK", "value": spec["videoTrack"]})
    source = spec["source"]
    if "pumpfun" in source:
        pf = source["pumpfun"]
        env += [
            {"name": "HAVEN_SOURCE", "value": "pumpfun"},
            {"name": "HAVEN_MINT_ID", "value": pf["mintId"]},
            {"name": "HAVEN_PUMPFUN_API_URL", "value": pf.get("apiURL", settings.pumpfun_api_url)},
            {"name": "HAVEN_PUMPFUN_LIVEKIT_URL", "value": settings.pumpfun_livekit_url},
        ]
    else:
        lk = source["livekit"]
        ref = lk["credentialsSecretRef"]
        env += [
            {"name": "HAVEN_SOURCE", "value": "livekit"},
            {"name": "HAVEN_LIVEKIT_URL", "value": lk["url"]},
            {"name": "HAVEN_LIVEKIT_ROOM", "value": lk["room"]},
            {
                "name": "HAVEN_LIVEKIT_API_KEY",
                "valueFrom": {
                    "secretKeyRef": {"name": ref["name"], "key": ref.get("apiKeyKey", "apiKey")}
                },
            },
            {
                "name": "HAVEN_LIVEKIT_API_SECRET",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": ref["name"],
                        "key": ref.get("apiSecretKey", "apiSecret"),
                    }
                },
            },
        ]
        if lk.get("participantIdentity"):
            env.append({"name": "HAVEN_PARTICIPANT_IDENTITY", "value": lk["participantIdentity"]})
    return env


def deployment(
    body: dict, settings: Settings, token: str = "", upload_hash: str = ""
) -> dict[str, Any]:
    """`upload_hash`: upload.credentials_hash of the object storage keys, if uploads are on."""
    spec, ls = body["spec"], body["metadata"]["name"]
    pod = spec.get("pod", {})
    n = names(ls)
    upload_cfg = upload.effective(body, settings.default_upload)
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5}
    container: dict[str, Any] = {
        "name": "stream",
        "image": pod.get("image") or settings.stream_pod_image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": _env(body, settings),
        "ports": [
            {"name": "http", "containerPort": settings.pod_port},
            {"name": "control", "containerPort": settings.control_port},
        ],
        "readinessProbe": probe,
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 60},
        "resources": pod.get("resources") or settings.pod_resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "recordings", "mountPath": RECORDINGS_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": POD_USER,
            "runAsGroup": POD_USER,
            "fsGroup": POD_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,  # the pod never talks to the apiserver
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "volumes": [
            {"name": "recordings", "persistentVolumeClaim": {"claimName": n["claim"]}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        ],
    }
    annotations = {TOKEN_HASH: token_hash(token)}
    if upload_cfg is not None:  # object storage: settings as env, keys as files
        container["env"] += upload.pod_env(upload_cfg)
        container["volumeMounts"].append(upload.pod_mount())
        pod_spec["volumes"].append(upload.pod_volume(upload_cfg))
        annotations[upload.CREDENTIALS_HASH] = upload_hash
    # The LiveStream's spec.pod overrides the operator's defaults (the chart's streamPod).
    if node_selector := pod.get("nodeSelector") or settings.pod_node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations := pod.get("tolerations") or settings.pod_tolerations:
        pod_spec["tolerations"] = tolerations
    if priority_class := pod.get("priorityClassName") or settings.pod_priority_class:
        pod_spec["priorityClassName"] = priority_class
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = settings.image_pull_secrets
    selector = {f"{GROUP}/livestream": ls}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(body, n["deployment"]),
        "spec": {
            "replicas": 0 if spec.get("suspend") else 1,
            "strategy": {"type": "Recreate"},  # one connection and one writer per volume
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": labels(ls),
                    "annotations": annotations,
                },
                "spec": pod_spec,
            },
        },
    }


def ingress(body: dict, settings: Settings) -> dict[str, Any] | None:
    ls = body["metadata"]["name"]
    cfg = body["spec"].get("viewer", {}).get("ingress")
    if not cfg:
        return None
    spec: dict[str, Any] = {
        "rules": [
            {
                "host": cfg["host"],
                "http": {
                    "paths": [
                        {
                            "path": cfg.get("path", "/"),
                            "pathType": "Prefix",
                            "backend": {
                                "service": {"name": names(ls)["service"], "port": {"name": "http"}}
                            },
                        }
                    ]
                },
            }
        ]
    }
    if cfg.get("className"):
        spec["ingressClassName"] = cfg["className"]
    if cfg.get("tlsSecretName"):
        spec["tls"] = [{"hosts": [cfg["host"]], "secretName": cfg["tlsSecretName"]}]
    meta = _meta(body, names(ls)["ingress"])
    if cfg.get("annotations"):  # the controller's own settings, e.g. ingress-nginx's timeouts
        meta["annotations"] = dict(cfg["annotations"])
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}
