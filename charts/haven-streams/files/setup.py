"""The chart's pre-install/pre-upgrade hook, run with the operator's image: apply the chart's
CRDs server-side (Helm never upgrades crds/), and make the gateway's token Secret once (an
existing one is kept, so renders, upgrades and GitOps syncs never change it)."""

import json
import os
import secrets
import sys
from pathlib import Path

import kubernetes
import yaml
from kubernetes.client import ApiException

MANAGER = "haven-streams-chart"


def main() -> int:
    kubernetes.config.load_incluster_config()
    client = kubernetes.client.ApiClient()
    crds = os.environ.get("HAVEN_CRDS_DIR")
    if crds:
        ext = kubernetes.client.ApiextensionsV1Api(client)
        for path in sorted(Path(crds).glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            name = crd["metadata"]["name"]
            ext.patch_custom_resource_definition(
                name, crd, field_manager=MANAGER, force=True,
                _content_type="application/apply-patch+yaml",
            )  # fmt: skip
            print(f"CRD {name} applied", flush=True)
    secret = os.environ.get("HAVEN_TOKEN_SECRET")
    if secret:
        namespace = os.environ["HAVEN_NAMESPACE"]
        body = {
            "metadata": {"name": secret, "labels": json.loads(os.environ["HAVEN_TOKEN_LABELS"])},
            "type": "Opaque",
            "stringData": {"token": secrets.token_urlsafe(30)},
        }
        core = kubernetes.client.CoreV1Api(client)
        try:
            core.create_namespaced_secret(namespace, body)
            print(f"Secret {secret} made", flush=True)
        except ApiException as e:
            if e.status != 409:
                raise
            # Chart 0.1.0 rendered it as part of the release: Helm would delete it now that
            # it is not rendered, unless the live object says keep.
            keep = {"metadata": {"annotations": {"helm.sh/resource-policy": "keep"}}}
            core.patch_namespaced_secret(secret, namespace, keep)
            print(f"Secret {secret} exists: kept", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
