"""TLS for the servers: the ``tls:`` section of ``grpc:`` and ``http:``, checked before anything
binds, and what each server library takes.

    grpc:
      tls: {cert: server.pem, key: server.key, client_ca: ca.pem, require_client_cert: true}

- ``TlsConfig.check(where)`` refuses a half-configured section (a cert without its key, a
  required client certificate without ``client_ca``, a file that cannot be read, a key that is
  not the certificate's) with a ``ConfigurationError`` naming the field (``grpc.tls.key``).
- ``grpc_credentials(tls)``: gRPC server credentials that reload the files when they change
  (``grpc.dynamic_ssl_server_credentials``: each new connection's handshake asks
  ``CertificateFiles.fetch``, which stats the files and rereads them when they changed; a new
  pair that does not load is logged and the previous one kept). Rotation needs no restart.
- ``TlsConfig.as_client()``: the same files as a ``ClientTLS``, the node's identity when it
  calls another node over mutual TLS (one CA for the cluster, certificates for both uses).
- ``uvicorn_options(tls)``: uvicorn's ``ssl_*`` options. uvicorn builds its ``SSLContext``
  once; ``reload_context`` loads the files again into that context (``chronik serve`` does it
  on SIGHUP), which new connections then use.

gRPC only asks for a client certificate when ``require_client_cert`` is set; uvicorn asks for
one whenever ``client_ca`` is set and verifies it if sent (required with
``require_client_cert``).
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from chronik.client_tls import ClientTLS
from chronik.errors import ConfigurationError

__all__ = ["CertificateFiles", "TlsConfig", "grpc_credentials", "reload_context", "uvicorn_options"]

log = logging.getLogger("chronik.server")


class TlsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """A server's certificate (PEM chain), its private key, and the CA its clients' certificates
    must chain to (``client_ca``; mutual TLS)."""

    cert: str = ""
    key: str = ""
    client_ca: str | None = None
    require_client_cert: bool = False

    def check(self, where: str = "tls") -> TlsConfig:
        """This section, fully configured and loadable; ConfigurationError naming the field
        (``where``.key, ...) otherwise."""
        if not self.cert:
            raise ConfigurationError(f"{where}.cert: required when {where} is configured")
        if not self.key:
            raise ConfigurationError(f"{where}.key: required with {where}.cert")
        if self.require_client_cert and not self.client_ca:
            raise ConfigurationError(
                f"{where}.client_ca: required with {where}.require_client_cert: true "
                "(the CA client certificates must chain to)"
            )
        for name in ("cert", "key", "client_ca"):
            path = getattr(self, name)
            if path is not None and not os.access(path, os.R_OK):
                raise ConfigurationError(f"{where}.{name}: cannot read {path}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                f"{where}.key: {self.key} and {where}.cert {self.cert} do not load as a "
                f"certificate and its private key ({exc})"
            ) from None
        if self.client_ca:
            try:
                context.load_verify_locations(self.client_ca)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigurationError(
                    f"{where}.client_ca: {self.client_ca} is not a PEM CA certificate ({exc})"
                ) from None
        return self

    def as_client(self, server_name: str | None = None, where: str = "grpc.tls") -> ClientTLS:
        """This node's identity as a client of another node (mutual TLS between cluster nodes:
        forwarding): its certificate and key, trusting ``client_ca``. The certificate must allow
        client authentication too (extended key usage clientAuth besides serverAuth)."""
        if not self.client_ca:
            raise ConfigurationError(f"{where}.client_ca: required to call other nodes")
        return ClientTLS(ca=self.client_ca, cert=self.cert, key=self.key, server_name=server_name)


@dataclass(frozen=True, slots=True)
class _Loaded:
    stamp: tuple[tuple[int, int, int], ...]
    key: bytes
    cert: bytes
    client_ca: bytes | None


def _stamp(paths: list[str]) -> tuple[tuple[int, int, int], ...]:
    found = []
    for path in paths:
        st = os.stat(path)
        found.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


class CertificateFiles:
    """The files of one ``TlsConfig``, read again whenever they change (``fetch``)."""

    def __init__(self, tls: TlsConfig) -> None:
        self.tls = tls
        self.reloads = 0  # how often a changed pair was loaded
        self._loaded = self._read()

    @property
    def _paths(self) -> list[str]:
        return [p for p in (self.tls.cert, self.tls.key, self.tls.client_ca) if p]

    def _read(self) -> _Loaded:
        stamp = _stamp(self._paths)
        ca = Path(self.tls.client_ca).read_bytes() if self.tls.client_ca else None
        return _Loaded(stamp, Path(self.tls.key).read_bytes(), Path(self.tls.cert).read_bytes(), ca)

    def configuration(self) -> Any:
        """The gRPC certificate configuration of the files as last read."""
        import grpc

        loaded = self._loaded
        return grpc.ssl_server_certificate_configuration(
            [(loaded.key, loaded.cert)], root_certificates=loaded.client_ca
        )

    def fetch(self) -> Any:
        """A new configuration if the files changed since they were read (and load), else None:
        gRPC's certificate-configuration fetcher, called on each new connection."""
        try:
            if _stamp(self._paths) == self._loaded.stamp:
                return None
            TlsConfig(
                self.tls.cert, self.tls.key, self.tls.client_ca, self.tls.require_client_cert
            ).check()
            self._loaded = self._read()
        except (OSError, ConfigurationError) as exc:  # mid-rotation: keep serving the old pair
            log.warning("TLS files changed but do not load; keeping the previous ones: %s", exc)
            return None
        self.reloads += 1
        log.warning("TLS certificate reloaded from %s", self.tls.cert)
        return self.configuration()


def grpc_credentials(tls: TlsConfig) -> tuple[Any, CertificateFiles]:
    """gRPC server credentials for ``tls`` that follow its files, and the files they follow."""
    import grpc

    files = CertificateFiles(tls)
    credentials = grpc.dynamic_ssl_server_credentials(
        files.configuration(),
        files.fetch,
        require_client_authentication=tls.require_client_cert,
    )
    return credentials, files


def uvicorn_options(tls: TlsConfig | None) -> dict[str, Any]:
    """The ``uvicorn.Config`` keyword arguments of ``tls`` (none without it)."""
    if tls is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": tls.cert, "ssl_keyfile": tls.key}
    if tls.client_ca:
        options["ssl_ca_certs"] = tls.client_ca
        options["ssl_cert_reqs"] = (
            ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
        )
    return options


def reload_context(context: ssl.SSLContext, tls: TlsConfig, where: str = "http.tls") -> None:
    """Load ``tls``'s files again into a serving ``context`` (new connections use them);
    ConfigurationError naming the field if they do not load (the old ones stay)."""
    tls.check(where)
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca:
        context.load_verify_locations(tls.client_ca)
