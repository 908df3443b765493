"""A consistent-hash ring over the live members: which node owns an aggregate.

Each node takes ``vnodes`` points on a 64-bit ring (``blake2b`` of ``"<node id>#<i>"``, never
Python's ``hash``, so every process on every machine computes the same ring); a key belongs to
the node of the first point at or after the key's own hash, wrapping around. Adding one node to
N moves about 1/(N+1) of the keys, all of them to the new node; removing one moves only the
keys it owned. The key of an aggregate is ``key_of(tenant, domain, aggregate_id)``: the very
identity of its stream (``StreamId``), so every node agrees on it.

``HashRing.of_view(view)`` builds the ring of a ``MembershipView``'s live members that serve
gRPC (others cannot be forwarded to). Pure data: imports nothing of chronik but the member
records.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from typing import Final

from chronik.cluster.member import MembershipView
from chronik.errors import ValidationError

__all__ = ["DEFAULT_VNODES", "HashRing", "key_of", "point"]

DEFAULT_VNODES: Final = 128
MAX_VNODES: Final = 4096


def point(data: bytes) -> int:
    """The position of ``data`` on the ring: its 64-bit blake2b hash."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def key_of(tenant: str, domain: str, aggregate_id: str) -> bytes:
    """The ring key of one aggregate: its stream identity (tenant, domain, aggregate id)."""
    return f"{tenant}\x00{domain}\x00{aggregate_id}".encode()


class HashRing:
    """Consistent hashing of keys over nodes (``owner(key) -> node id``); immutable."""

    __slots__ = ("_nodes", "_owners", "_points", "vnodes")

    def __init__(self, nodes: Iterable[str], vnodes: int = DEFAULT_VNODES) -> None:
        if type(vnodes) is not int or not 1 <= vnodes <= MAX_VNODES:
            raise ValidationError(
                f"invalid vnodes {vnodes!r}: expected 1..{MAX_VNODES}", field="vnodes"
            )
        self.vnodes = vnodes
        self._nodes = tuple(sorted(set(nodes)))
        ring = sorted(
            (point(f"{node}#{i}".encode()), node) for node in self._nodes for i in range(vnodes)
        )
        self._points = [p for p, _ in ring]
        self._owners = [n for _, n in ring]

    @classmethod
    def of_view(cls, view: MembershipView, vnodes: int = DEFAULT_VNODES) -> HashRing:
        """The ring of the view's live members that others can reach over gRPC."""
        return cls((m.node_id for m in view.live if m.grpc), vnodes)

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes on the ring, sorted."""
        return self._nodes

    def owner(self, key: bytes | str) -> str | None:
        """The node owning ``key`` (None on an empty ring)."""
        if not self._points:
            return None
        raw = key.encode() if isinstance(key, str) else key
        i = bisect.bisect_left(self._points, point(raw))
        return self._owners[i if i < len(self._points) else 0]

    def __len__(self) -> int:
        return len(self._nodes)

    def __repr__(self) -> str:
        return f"<HashRing {len(self._nodes)} nodes x {self.vnodes} vnodes>"
