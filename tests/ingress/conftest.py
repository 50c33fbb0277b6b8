"""The Ingress controller (Traefik, localcluster/haven_localcluster/ingress.py) in the session's
cluster, and clients that reach an Ingress host through it: the host name is resolved to the
controller's Service address by the client itself (no system DNS)."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
from dataclasses import dataclass

import httpx
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from haven_localcluster import ingress as ingress_mod
from tests.conftest import report
from tests.recorder.conftest import decode_video_message


@dataclass(frozen=True)
class Controller:
    address: str  # the controller Service's ClusterIP (ports 80 and 443)

    def get(
        self, host: str, path: str, ca: ssl.SSLContext | None = None, headers: dict | None = None
    ) -> httpx.Response:
        """GET http(s)://host/path through the controller."""
        scheme = "https" if ca else "http"
        with httpx.Client(verify=ca or True, trust_env=False, timeout=20) as client:
            return client.get(
                f"{scheme}://{self.address}{path}",
                headers={"Host": host, **(headers or {})},
                extensions={"sni_hostname": host} if ca else None,
            )

    def websocket(self, host: str, path: str, ca: ssl.SSLContext | None = None, **options):
        """A WebSocket to ws(s)://host/path, connected to the controller; `options` go to
        websockets.connect."""
        scheme = "wss" if ca else "ws"
        return websockets.connect(
            f"{scheme}://{host}{path}",
            host=self.address,
            port=443 if ca else 80,
            ssl=ca,
            proxy=None,
            max_size=None,
            open_timeout=20,
            **options,
        )

    def frame_counters(
        self, host: str, path: str, count: int, ca: ssl.SSLContext | None = None
    ) -> list[int | None]:
        """The test pattern's counters of the first `count` video frames at ws(s)://host/path."""

        async def read() -> list[int | None]:
            counters: list[int | None] = []
            async with self.websocket(host, path, ca) as ws:
                while len(counters) < count:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
                    if msg["type"] == "video_frame":
                        counters.append(decode_video_message(json.dumps(msg))[0])
            return counters

        return asyncio.run(read())


@pytest.fixture(scope="session")
def ingress_controller(cluster, pytestconfig) -> Controller:
    """Traefik in the session's cluster (built and deployed on first use; stays for the
    session, like CoreDNS)."""
    address = ingress_mod.start(cluster)
    report(pytestconfig, f"[ingress] Traefik {ingress_mod.CLASS} at {address}:80 and :443")
    return Controller(address)


@dataclass(frozen=True)
class Certificates:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def client_context(self) -> ssl.SSLContext:
        """A client that trusts only this CA."""
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode())
        return ctx


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def make_certificates(host: str) -> Certificates:
    """A self-signed CA and a server certificate for `host` signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "haven test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Certificates(
        ca.public_bytes(pem),
        cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
