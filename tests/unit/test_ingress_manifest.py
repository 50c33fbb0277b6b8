"""The operator's Ingress for a LiveStream (children.ingress) and what goes with it: the pod
serves the Ingress's path itself, annotations pass through, the controller is Traefik locally."""

from __future__ import annotations

from haven_localcluster import ingress
from haven_operator import children
from haven_operator.settings import Settings


def body(**ingress_cfg) -> dict:
    return {
        "apiVersion": "streams.haven.dev/v1alpha1",
        "kind": "LiveStream",
        "metadata": {"name": "cam", "namespace": "ns", "uid": "u1"},
        "spec": {
            "source": {"pumpfun": {"mintId": "So11111111111111111111111111111111111111112"}},
            "viewer": {"ingress": {"host": "cam.example.test", **ingress_cfg}},
        },
    }


def env(b: dict) -> dict[str, str | None]:
    container = children.deployment(b, Settings())["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_a_path_prefix_is_served_by_the_pod_and_routed_as_is():
    b = body(path="/streams/demo/", className="traefik", tlsSecretName="cam-tls")
    ing = children.ingress(b, Settings())
    (path,) = ing["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/streams/demo/" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": "cam-stream", "port": {"name": "http"}}
    assert ing["spec"]["ingressClassName"] == "traefik"
    assert ing["spec"]["tls"] == [{"hosts": ["cam.example.test"], "secretName": "cam-tls"}]
    assert "annotations" not in ing["metadata"]  # no rewrite needed
    assert env(b)["HAVEN_VIEWER_PATH"] == "/streams/demo/"


def test_the_root_path_sets_nothing_on_the_pod():
    assert "HAVEN_VIEWER_PATH" not in env(body())
    assert "HAVEN_VIEWER_PATH" not in env(body(path="/"))


def test_annotations_reach_the_ingress():
    timeouts = {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}
    ing = children.ingress(body(annotations=timeouts), Settings())
    assert ing["metadata"]["annotations"] == timeouts


def test_traefik_holds_upgraded_connections_and_lists_its_timeouts():
    args = ingress.args("10.96.0.80")
    assert "--entryPoints.web.transport.respondingTimeouts.writeTimeout=0s" in args
    assert "--entryPoints.websecure.transport.respondingTimeouts.idleTimeout=180s" in args
    assert "--serversTransport.forwardingTimeouts.responseHeaderTimeout=0s" in args
    assert "--providers.kubernetesingress.ingressendpoint.ip=10.96.0.80" in args
    kinds = [m["kind"] for m in ingress.manifests("img", "10.96.0.80")]
    assert "IngressClass" in kinds and kinds[-1] == "Service"
