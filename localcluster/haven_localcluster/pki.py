"""Certificates and keys for the local control plane: one CA, the apiserver's serving cert,
client certs per component, and the service-account signing key."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)
NODE_NAME = "haven-node"

# Client identities: file stem -> (user, groups). RBAC's bootstrap roles bind these users.
CLIENTS: dict[str, tuple[str, list[str]]] = {
    "admin": ("kubernetes-admin", ["system:masters"]),
    "controller-manager": ("system:kube-controller-manager", []),
    "scheduler": ("system:kube-scheduler", []),
    "kubelet": (f"system:node:{NODE_NAME}", ["system:nodes"]),
    "kube-proxy": ("system:kube-proxy", []),
    # The apiserver's identity towards kubelets (logs, exec, port-forward).
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ["system:masters"]),
}


@dataclass(frozen=True)
class Pki:
    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def ca_cert(self) -> Path:
        return self.path("ca.crt")


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usages: list[x509.ObjectIdentifier] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=not ca,
                key_cert_sign=ca,
                crl_sign=ca,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(cn: str, orgs: list[str] | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs or []]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def create(directory: Path, service_ip: str, extra_ips: list[str] | None = None) -> Pki:
    """Write a fresh PKI into `directory` (idempotent: an existing one is kept)."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    if pki.ca_cert.exists():
        return pki

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("haven-localcluster-ca")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    _write_key(pki.path("ca.key"), ca_key)
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def issue(stem: str, subject: x509.Name, usage: x509.ObjectIdentifier, sans=None) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(subject, key, ca_name, ca_key, usages=[usage], sans=sans)
        _write_key(pki.path(f"{stem}.key"), key)
        pki.path(f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ips = ["127.0.0.1", service_ip, *(extra_ips or [])]
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns.append("kubernetes.default.svc.cluster.local")
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    issue("apiserver", _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    for stem, (user, groups) in CLIENTS.items():
        issue(stem, _name(user, groups), ExtendedKeyUsageOID.CLIENT_AUTH)

    # Service-account tokens are signed with RSA, which every client library verifies.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.path("sa.key"), sa_key)
    pki.path("sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
