"""TLS for chronik's gRPC clients: ``ClientTLS``, the CA to trust and, for mutual TLS, the
client's own certificate and key.

    Client("node-1:50051", tls=ClientTLS(ca="ca.pem", cert="client.pem", key="client.key"))

The same struct is what a config file holds for a node calling another over mutual TLS (its
fields are plain paths: ``msgspec.convert({"ca": ...}, ClientTLS)``). The files are read
when the channel is made; a new channel reads them again (rotation on the client side).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from chronik.errors import ConfigurationError

__all__ = ["ClientTLS"]


class ClientTLS(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Paths of PEM files: ``ca`` (None: the system's roots), ``cert`` and ``key`` (both or
    neither: the client certificate of mutual TLS); ``server_name`` overrides the name the
    server's certificate must carry (default: the host of the address)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None

    def _read(self, name: str) -> bytes | None:
        path = getattr(self, name)
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"ClientTLS {name}: cannot read {path}: {exc.strerror}"
            ) from None

    def credentials(self) -> Any:
        """The gRPC channel credentials (ConfigurationError naming the field if unusable)."""
        import grpc

        if (self.cert is None) != (self.key is None):
            missing = "key" if self.key is None else "cert"
            raise ConfigurationError(f"ClientTLS {missing}: cert and key go together (mutual TLS)")
        return grpc.ssl_channel_credentials(
            root_certificates=self._read("ca"),
            private_key=self._read("key"),
            certificate_chain=self._read("cert"),
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        """The channel options TLS adds (the server name override)."""
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]
