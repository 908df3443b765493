"""Certificates for tests: a CA, and server and client certificates it signs, as PEM files.

    ca = TestCA(tmp_path)
    server = ca.issue("server", hosts=["127.0.0.1", "localhost"])   # .cert, .key: paths
    client = ca.issue("client", client=True)

Needs the ``cryptography`` package (the ``http`` extra brings it with pyjwt[crypto]). Keys are
EC P-256 (fast to make); certificates are valid from a minute ago for ``days`` days.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "TestCA"]


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path
    serial: int


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class TestCA:
    """A self-signed CA writing its files under ``directory`` (``ca.pem``, ``ca.key``)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "chronik test CA", days: int = 2) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.days = days
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self._name = _name(name)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert = directory / "ca.pem"
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        _write_key(self._key, directory / "ca.key")

    def issue(
        self,
        name: str,
        *,
        hosts: tuple[str, ...] | list[str] = ("127.0.0.1", "localhost"),
        client: bool = False,
        node: bool = False,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> Issued:
        """A certificate for ``name`` signed by this CA: a server's (for ``hosts``), a
        client's, or with ``node`` both (a cluster node serving and calling others); written
        to ``cert`` / ``key`` (default: ``<name>.pem`` / ``<name>.key``)."""
        private = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if not node:
            usages = [usages[1] if client else usages[0]]
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._name)
            .public_key(private.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        cert = cert or self.directory / f"{name}.pem"
        key = key or self.directory / f"{name}.key"
        _write_key(private, key)
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return Issued(cert, key, serial)
