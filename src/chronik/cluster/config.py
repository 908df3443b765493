"""The ``cluster`` section of ``chronik serve``'s configuration, and the checks of its values.

cluster:
  enabled: true                 # off by default: a single node needs no membership
  node_id: node-a               # stable across restarts; default: <hostname>-<random>, printed
  advertise: {grpc: "10.0.0.5:50051", http: "10.0.0.5:8080"}   # how others reach this node
  ttl: 10                       # seconds a silent node stays a member; renewed every ttl/3
  forget_after: 300             # seconds a gone node is still listed (as left or dead)
  routing: affinity             # local (default) | affinity: forward to the aggregate's owner
  secret_env: CHRONIK_CLUSTER_SECRET   # the cluster's credential for forwarded commands
  backend: store                # store (default: the store's leases) | nats (a JetStream KV bucket)
  nats_url: nats://nats:4222    # with backend nats; default: the transport URL when it is nats://
  nats_bucket: chronik_members  # the KV bucket of the members (backend nats)

Every bad value is a ValidationError naming its field (``cluster.ttl``, ...).
"""

from __future__ import annotations

import math
import os
import re
import secrets
import socket
from typing import Final
from urllib.parse import urlsplit

import msgspec

from chronik.errors import ValidationError

__all__ = [
    "AdvertiseConfig",
    "BACKENDS",
    "ClusterConfig",
    "MAX_TTL",
    "MIN_TTL",
    "ROUTINGS",
    "check_address",
    "check_bucket",
    "check_nats_url",
    "check_node_id",
    "check_seconds",
    "new_node_id",
]

MIN_TTL: Final = 0.3
MAX_TTL: Final = 3600.0
_NODE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_HOST: Final = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+")
ROUTINGS: Final = ("local", "affinity")
MIN_SECRET: Final = 16
BACKENDS: Final = ("store", "nats")
_NATS_SCHEMES: Final = ("nats", "tls")
_BUCKET: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


class AdvertiseConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The addresses other nodes and clients reach this node at (``host:port``)."""

    grpc: str | None = None  # default: the address gRPC is bound to
    http: str | None = None  # default: the address HTTP is bound to


class ClusterConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Cluster membership (``chronik.cluster``)."""

    enabled: bool = False
    node_id: str | None = None
    advertise: AdvertiseConfig = msgspec.field(default_factory=AdvertiseConfig)
    ttl: float = 10.0
    forget_after: float = 300.0
    #: ``local``: every node handles the commands it receives; ``affinity``: a node forwards a
    #: command to the live member owning its aggregate (chronik.server.forwarding)
    routing: str = "local"
    #: the cluster's own credential on forwarded commands (needed when auth is configured)
    secret: str | None = None
    secret_env: str | None = None  # read the secret from this environment variable instead
    #: where members register: ``store`` (the store's leases) or ``nats`` (a JetStream KV bucket)
    backend: str = "store"
    #: the NATS server of ``backend: nats`` (default: the transport URL, when it is nats://)
    nats_url: str | None = None
    nats_bucket: str = "chronik_members"

    def check(self) -> ClusterConfig:
        """This configuration, checked (ValidationError naming the field)."""
        if self.node_id is not None:
            check_node_id(self.node_id, "cluster.node_id")
        for name in ("grpc", "http"):
            value = getattr(self.advertise, name)
            if value is not None:
                check_address(value, f"cluster.advertise.{name}")
        check_seconds(self.ttl, "cluster.ttl", MIN_TTL, MAX_TTL)
        check_seconds(self.forget_after, "cluster.forget_after", 0.0, 365 * 86400.0)
        if self.routing not in ROUTINGS:
            raise ValidationError(
                f"invalid cluster.routing {self.routing!r}: expected local or affinity",
                field="cluster.routing",
            )
        if self.secret is not None and self.secret_env is not None:
            raise ValidationError(
                "cluster.secret_env: give cluster.secret or cluster.secret_env, not both",
                field="cluster.secret_env",
            )
        self.cluster_secret()
        if self.backend not in BACKENDS:
            raise ValidationError(
                f"invalid cluster.backend {self.backend!r}: expected store or nats",
                field="cluster.backend",
            )
        if self.nats_url is not None:
            check_nats_url(self.nats_url, "cluster.nats_url")
        check_bucket(self.nats_bucket, "cluster.nats_bucket")
        return self

    def nats_server(self, transport: str | None = None) -> str:
        """The NATS URL of ``backend: nats``: ``nats_url``, else ``transport`` when it is a
        NATS URL (its options dropped); ValidationError naming ``cluster.nats_url`` if none."""
        if self.nats_url is not None:
            return check_nats_url(self.nats_url, "cluster.nats_url")
        if transport is not None and urlsplit(transport).scheme in _NATS_SCHEMES:
            parts = urlsplit(transport)
            return check_nats_url(f"{parts.scheme}://{parts.netloc}", "cluster.nats_url")
        raise ValidationError(
            "cluster.nats_url: cluster.backend nats needs a NATS server: set cluster.nats_url "
            "or a nats:// transport",
            field="cluster.nats_url",
        )

    def cluster_secret(self) -> str | None:
        """The cluster secret (from ``secret`` or the environment), None when not configured;
        ValidationError naming the field if it is shorter than 16 characters."""
        field = "cluster.secret_env" if self.secret_env is not None else "cluster.secret"
        value = os.environ.get(self.secret_env, "") if self.secret_env else self.secret
        if value is None:
            return None
        if not isinstance(value, str) or len(value) < MIN_SECRET:
            where = f" (environment variable {self.secret_env})" if self.secret_env else ""
            raise ValidationError(
                f"invalid {field}{where}: the cluster secret is missing or shorter than "
                f"{MIN_SECRET} characters",
                field=field,
            )
        return value


def check_node_id(value: object, field: str = "node_id") -> str:
    """A node id: 1..128 of letters, digits and ``._:@-``, starting with a letter or digit."""
    if not isinstance(value, str) or _NODE_ID.fullmatch(value) is None:
        raise ValidationError(
            f"invalid {field} {value!r}: expected 1..128 letters, digits or ._:@- "
            "(starting with a letter or digit)",
            field=field,
        )
    return value


def check_address(value: object, field: str) -> str:
    """An address others can dial: ``host:port`` (``[v6]:port``), or "" for none."""
    if value == "":
        return ""
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if sep and _HOST.fullmatch(host) is not None and port.isdigit() and 0 < int(port) <= 65535:
            return value
    raise ValidationError(f"invalid {field} {value!r}: expected host:port", field=field)


def check_nats_url(value: object, field: str = "url") -> str:
    """A NATS server URL: ``nats://`` or ``tls://``, a host, no path or query."""
    if isinstance(value, str):
        try:
            parts = urlsplit(value)
            ok = parts.scheme in _NATS_SCHEMES and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a port out of range
            ok = False
        if ok and not parts.path.strip("/") and not parts.query:
            return value
    raise ValidationError(
        f"invalid {field} {value!r}: expected nats://host:port (or tls://host:port)", field=field
    )


def check_bucket(value: object, field: str = "bucket") -> str:
    """A JetStream KV bucket name: 1..64 letters, digits, ``_`` or ``-``."""
    if not isinstance(value, str) or _BUCKET.fullmatch(value) is None:
        raise ValidationError(
            f"invalid {field} {value!r}: expected 1..64 letters, digits, _ or -", field=field
        )
    return value


def check_seconds(value: object, field: str, low: float, high: float) -> float:
    """A finite number of seconds within [low, high]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ValidationError(
            f"invalid {field} {value!r}: expected {low:g}..{high:g} seconds", field=field
        )
    return float(value)


def new_node_id() -> str:
    """A fresh node id: this machine's host name and a random suffix."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:100].strip("-.") or "node"
    if not host[0].isalnum():
        host = "node-" + host
    return f"{host}-{secrets.token_hex(3)}"
