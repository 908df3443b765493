"""What the cluster knows of a node: the record it publishes, the member as seen by others,
and the view of the whole membership with a digest of its live set.

A ``MemberInfo`` is what a node says about itself (its stable id, the gRPC / HTTP addresses
others reach it at, its chronik version, when this incarnation started, the parts it runs and
its load). A ``Member`` is that record as read back, with what the lease says: whether it is
alive by the database clock and when it was last seen. A ``MembershipView`` is every member at
one moment with a ``digest`` of the live set (equal on every node that sees the same live
members: a router compares it) and an ``epoch`` (this process's count of changes it saw:
monotonic, never shared).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

__all__ = ["Member", "MemberInfo", "MembershipView", "live_digest"]


class MemberInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a node publishes about itself with each heartbeat."""

    node_id: str
    #: the gRPC address others forward commands to (``host:port``), "" when it serves none
    grpc: str = ""
    #: the HTTP address others reach (``host:port``), "" when it serves none
    http: str = ""
    version: str = ""
    #: unix seconds at which this incarnation of the node started
    started_at: float = 0.0
    #: microseconds since the epoch at start: tells a restart with the same node id apart
    incarnation: int = 0
    #: the parts it runs now (``projection:<name>[/<partition>]``, ``outbox dispatcher``, ...)
    parts: tuple[str, ...] = ()
    #: numbers about its load (``inflight_commands``, ``loop_lag_s``)
    load: dict[str, float] = msgspec.field(default_factory=dict)
    #: seconds its lease lasts unless renewed (it renews every ttl/3)
    ttl: float = 10.0


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """A node as the membership shows it: its record and its liveness by the database clock."""

    node_id: str
    grpc: str
    http: str
    version: str
    started_at: float
    incarnation: int
    parts: tuple[str, ...]
    load: dict[str, float]
    ttl: float
    #: whether its lease is unexpired by the database clock
    alive: bool
    #: ``alive``, ``left`` (released its lease on shutdown) or ``dead`` (its lease expired)
    state: str
    #: unix seconds (database clock) of its last heartbeat
    last_seen: float
    #: the lease's fencing epoch (grows when another owner took the node id's lease)
    lease_epoch: int

    @classmethod
    def of(cls, info: MemberInfo, *, state: str, last_seen: float, lease_epoch: int) -> Member:
        """The member for ``info`` with what its lease says."""
        fields = msgspec.structs.asdict(info)
        return cls(
            **fields,
            alive=state == "alive",
            state=state,
            last_seen=last_seen,
            lease_epoch=lease_epoch,
        )

    def to_json(self) -> dict[str, Any]:
        """The member as JSON-ready builtins."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


def live_digest(members: list[Member] | tuple[Member, ...]) -> str:
    """A short hash of the live members (id, incarnation, gRPC address), in id order."""
    h = hashlib.sha256()
    for m in sorted((m for m in members if m.alive), key=lambda m: m.node_id):
        h.update(f"{m.node_id}\x00{m.incarnation}\x00{m.grpc}\x01".encode())
    return h.hexdigest()[:16]


class MembershipView(msgspec.Struct, frozen=True, kw_only=True):
    """Every member (live and recently gone) at one moment, by the database clock."""

    members: tuple[Member, ...]
    #: unix seconds (database clock) at which the view was read
    at: float
    #: the live set's digest (``live_digest``): equal wherever the same nodes are live
    digest: str
    #: how many times this process saw the live set change (0 for a one-off read)
    epoch: int = 0

    @property
    def live(self) -> tuple[Member, ...]:
        """The live members, in node id order."""
        return tuple(m for m in self.members if m.alive)

    def to_json(self) -> dict[str, Any]:
        """The view as JSON-ready builtins (members in node id order)."""
        return {
            "at": self.at,
            "digest": self.digest,
            "epoch": self.epoch,
            "live": len(self.live),
            "members": [m.to_json() for m in self.members],
        }
