"""Viewers through a real Ingress controller (Traefik) on the local cluster, with the chart's
operator: the page in Chromium at `status.viewerURL` over TLS under a path prefix, the WebSocket
(ws:// and wss://), the control API unreachable, the gateway's Ingress.

One LiveStream serves most of these tests (module fixture `cam`): host `<ns>.haven.test`, a TLS
Secret made here from a self-signed CA, and `path: /streams/demo/`. Traefik serves every Ingress
on both its plain and its TLS entry point, so the same stream answers http:// and https://."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import kubernetes
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import sync_playwright

from haven_localcluster import ingress as ingress_mod
from haven_localcluster import release
from haven_localcluster.process import stop
from haven_localcluster.publisher import spawn_publisher
from tests.operator.test_end_to_end import apply, credentials, get, livestream, wait_for, wait_live
from tests.recorder.test_viewer_page import ARGS, CHROMIUM, canvas_counter

from .conftest import Certificates, Controller, make_certificates

PREFIX = "/streams/demo/"
# Every path of the control port (8081): through the Ingress, none may reach it.
CONTROL_PATHS = (
    "/metrics", "/status", "/formats", "/recordings", "/recordings/x", "/recordings/x/files",
    "/recordings/x/files/x.webm", "/tasks", "/docs", "/openapi.json",
)  # fmt: skip


@dataclass(frozen=True)
class Cam:
    namespace: str
    host: str
    certs: Certificates
    status: dict


def delete_namespace(core: kubernetes.client.CoreV1Api, name: str) -> None:
    core.delete_namespace(name)
    wait_for(
        lambda: not core.list_namespace(field_selector=f"metadata.name={name}").items, timeout=180
    )


@pytest.fixture(scope="module")
def cam(
    operator, kubectl, api_client, livekit_server, ingress_controller: Controller, tmp_path_factory
) -> Iterator[Cam]:
    """A live LiveStream behind the Ingress (TLS, path prefix), in a namespace of its own."""
    namespace = f"t-ingress-{uuid.uuid4().hex[:5]}"
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": namespace}})
    host = f"{namespace}.haven.test"
    certs = make_certificates(host)
    room = f"room-{uuid.uuid4().hex[:8]}"
    lk = livekit_server
    pub = spawn_publisher(
        lk.url, lk.api_key, lk.api_secret, room, tmp_path_factory.mktemp("ingress-publisher"),
        options=["--width", "640", "--height", "360"],
    )  # fmt: skip
    try:
        tls = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "cam-tls"},
            "stringData": {"tls.crt": certs.cert_pem.decode(), "tls.key": certs.key_pem.decode()},
        }
        viewer = {
            "maxWidth": 640,
            "ingress": {
                "host": host,
                "className": ingress_mod.CLASS,
                "tlsSecretName": "cam-tls",
                "path": PREFIX,
            },
        }
        apply(kubectl, namespace, credentials(lk), tls, livestream("cam", lk, room, viewer=viewer))
        st = wait_live(kubectl, namespace, "cam")
        # Routed once Traefik has seen the pod's endpoint (it skips a Service with none).
        wait_for(lambda: ingress_controller.get(host, PREFIX).status_code == 200, timeout=60)
        yield Cam(namespace, host, certs, st)
    finally:
        stop([pub])
        delete_namespace(core, namespace)


def spki_hash(cert_pem: bytes) -> str:
    """What Chromium's --ignore-certificate-errors-spki-list takes: base64 SHA-256 of the SPKI."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_the_viewer_url_plays_in_chromium_through_the_ingress_over_tls(
    cam: Cam, ingress_controller: Controller
):
    """status.viewerURL (https, under the path prefix) opened in Chromium, which resolves the
    host to the controller by itself and trusts the server's key: the canvas counter advances,
    so the page's WebSocket (wss://host/streams/demo/stream) works too."""
    url = cam.status["viewerURL"]
    assert url == f"https://{cam.host}{PREFIX}", url
    args = [
        *ARGS,
        f"--host-resolver-rules=MAP {cam.host} {ingress_controller.address}",
        f"--ignore-certificate-errors-spki-list={spki_hash(cam.certs.cert_pem)}",
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            response = page.goto(url)
            assert response is not None and response.status == 200
            page.wait_for_function("Number(document.getElementById('frames').textContent) > 10")
            first = canvas_counter(page)
            page.wait_for_function(
                f"Number(document.getElementById('frames').textContent) > "
                f"{page.text_content('#frames')}"
            )
            second = canvas_counter(page)
            assert first is not None and second is not None and second > first, (first, second)
            assert page.text_content("#state") == "live"
        finally:
            browser.close()


def test_tls_serves_the_page_and_wss_with_a_certificate_from_the_secret(
    cam: Cam, ingress_controller: Controller
):
    """A client that trusts only the test's CA: https:// and wss:// verify against the
    certificate of `tlsSecretName`, for the Ingress host (SNI)."""
    ca = cam.certs.client_context()
    page = ingress_controller.get(cam.host, PREFIX, ca=ca)
    assert page.status_code == 200 and "<canvas" in page.text
    counters = ingress_controller.frame_counters(cam.host, PREFIX + "stream", 5, ca=ca)
    assert all(c is not None for c in counters) and counters == sorted(counters), counters


def test_the_path_prefix_serves_page_and_socket_over_plain_http(
    cam: Cam, ingress_controller: Controller
):
    """`path: /streams/demo/`: the page and the socket under it (the pod serves that prefix;
    no rewrite), nothing outside it (Traefik has no route: 404)."""
    page = ingress_controller.get(cam.host, PREFIX)
    assert page.status_code == 200 and "<canvas" in page.text
    counters = ingress_controller.frame_counters(cam.host, PREFIX + "stream", 5)
    assert all(c is not None for c in counters) and counters == sorted(counters), counters
    assert ingress_controller.get(cam.host, "/").status_code == 404
    assert ingress_controller.get(cam.host, "/stream").status_code == 404


def test_the_control_api_and_metrics_are_404_through_the_ingress(
    cam: Cam, ingress_controller: Controller, kubectl
):
    """The Ingress routes the viewer port only: every control path is 404, under the prefix
    (the viewer app has no such route) and outside it (no route in the controller)."""
    ing = get(kubectl, cam.namespace, "ingress", "cam-stream")
    (rule,) = ing["spec"]["rules"]
    backends = [p["backend"]["service"] for p in rule["http"]["paths"]]
    assert backends == [{"name": "cam-stream", "port": {"name": "http"}}], backends
    svc = get(kubectl, cam.namespace, "svc", "cam-stream")
    http_port = next(p for p in svc["spec"]["ports"] if p["name"] == "http")
    assert http_port["port"] == 8080, http_port
    for base in ("", PREFIX.rstrip("/")):
        for path in CONTROL_PATHS:
            answer = ingress_controller.get(cam.host, base + path)
            assert answer.status_code == 404, (base + path, answer.status_code, answer.text[:200])
    ca = cam.certs.client_context()
    for path in ("/metrics", "/status", "/recordings"):
        assert ingress_controller.get(cam.host, PREFIX + path[1:], ca=ca).status_code == 404


def test_the_ingress_status_names_the_controller(cam: Cam, kubectl, ingress_controller: Controller):
    """Traefik publishes its Service's address in the Ingress's status."""
    ing = wait_for(
        lambda: (
            (i := get(kubectl, cam.namespace, "ingress", "cam-stream"))
            .get("status", {})
            .get("loadBalancer", {})
            .get("ingress")
            and i
        ),
        timeout=30,
    )
    assert ing["status"]["loadBalancer"]["ingress"][0]["ip"] == ingress_controller.address


def test_the_gateways_ingress_through_the_controller(
    operator, gateway_token, ingress_controller: Controller
):
    """The chart's `gateway.ingress` (enabled in the release's values) through Traefik."""
    host = release.GATEWAY_INGRESS_HOST
    assert ingress_controller.get(host, "/healthz").status_code == 200
    assert ingress_controller.get(host, "/api/recording/formats").status_code == 401
    answer = ingress_controller.get(
        host, "/api/recording/formats", headers={"Authorization": f"Bearer {gateway_token}"}
    )
    assert answer.status_code == 200 and answer.json()["success"] is True, answer.text[:300]


@pytest.fixture
def gateway_token(kubectl) -> str:
    secret = get(kubectl, release.NAMESPACE, "secret", release.GATEWAY_SECRET)
    return base64.b64decode(secret["data"]["token"]).decode()


def test_a_path_the_pod_cannot_serve_is_refused_at_apply(crds, kubectl):
    """Path segments of letters, digits and -._~ only (what the pod serves as a prefix)."""
    for path in ("streams", "/a b/", "//", "/a//b/", "/x?y", ""):
        ingress = {"host": "a.test", "path": path}
        body = livestream("bad", _NoLiveKit, "room", viewer={"ingress": ingress})
        out = kubectl(
            "apply", "--dry-run=server", "-n", "default", "-f", "-",
            input=json.dumps(body), check=False,
        )  # fmt: skip
        assert out.returncode != 0 and "spec.viewer.ingress.path" in out.stderr, (path, out)


class _NoLiveKit:
    cluster_url = "ws://10.0.0.1:7880"
