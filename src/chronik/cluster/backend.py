"""The port behind cluster membership: where nodes register, renew and read each other.

``MembershipBackend`` is small on purpose: a heartbeat (register or renew a node's record and
its lease, answering the backend clock), a clean leave, a read of every member by that clock
and the pruning of long-gone records. The reference adapter is the store
(``chronik.cluster.store_backend.StoreMembershipBackend``: the leases table plus a table of
records, on every store with read-model tables). The NATS adapter
(``chronik.cluster.nats_backend.NatsMembershipBackend``: one key per node in a JetStream KV
bucket, written against the revision read, judged by the server's message timestamps) is for
deployments that run a NATS transport. ``chronik.testing.conformance_membership`` is the suite
every adapter passes.
"""

from __future__ import annotations

import abc

from chronik.cluster.member import Member, MemberInfo

__all__ = ["MembershipBackend"]


class MembershipBackend(abc.ABC):
    """Where members register with a lease and read each other, by one shared clock."""

    @abc.abstractmethod
    async def heartbeat(self, info: MemberInfo) -> int:
        """Register or renew ``info`` for ``info.ttl`` seconds; the backend clock at renewal
        (microseconds since the epoch). LeaseHeld while another live node holds the node id."""

    @abc.abstractmethod
    async def leave(self, info: MemberInfo, at_us: int) -> None:
        """Give the node's lease up now and mark its record as left at ``at_us``."""

    @abc.abstractmethod
    async def read(
        self, forget_after: float, now_us: int | None = None
    ) -> tuple[list[Member], int]:
        """Every member, live or gone for at most ``forget_after`` seconds, in node id order,
        and the backend clock they were judged by (``now_us``, else read from the backend)."""

    @abc.abstractmethod
    async def now_us(self) -> int:
        """The backend clock now (microseconds since the epoch)."""

    async def prune(self, forget_after: float, now_us: int) -> int:
        """Drop the records of members gone for longer than ``forget_after`` s; how many."""
        return 0
