"""Membership in the store's own database: the reference ``MembershipBackend``.

Works on every store with read-model tables (memory, SQLite, PostgreSQL, Redis, LMDB, MySQL)
and needs no migration. A node's liveness is a lease in the leases table: name
``chronik.member``, partition a stable 63-bit hash of the node id, owner the node id and its
incarnation, version the incarnation. So the store's clock decides expiry, and two live nodes
can never hold the same id. What the node says about itself is one JSON row of the
``chronik_members`` table (created on first use), upserted in the same unit of work as each
lease renewal. Reading judges every lease by the database clock: a reader that knows it (a
running node, from its own renewals) passes it in; any other takes it from a zero-ttl lease
``chronik.clock``, whose expiry the database sets to its own now (a store that refuses the
write: this machine's clock).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any, Final

import msgspec

from chronik.cluster.backend import MembershipBackend
from chronik.cluster.member import Member, MemberInfo
from chronik.errors import ChronikError, LeaseHeld, ReadModelError
from chronik.store import leases
from chronik.store.base import EventStore
from chronik.store.records import TableSpec, TableWrite

__all__ = [
    "CLOCK_LEASE",
    "MEMBERS",
    "MEMBER_LEASE",
    "StoreMembershipBackend",
    "lease_owner",
    "member_partition",
]

MEMBER_LEASE: Final = "chronik.member"
CLOCK_LEASE: Final = "chronik.clock"
MEMBERS: Final = TableSpec(
    "chronik_members",
    (
        ("node_id", "TEXT"),
        ("incarnation", "INTEGER"),
        ("info", "TEXT"),  # MemberInfo as JSON
        ("left_at", "INTEGER"),  # unix microseconds of a clean leave, else NULL
    ),
    ("node_id",),
)
_ENSURE_ATTEMPTS: Final = 3


def member_partition(node_id: str) -> int:
    """The lease partition of a node id: a stable 63-bit hash of it."""
    return int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:8], "big") >> 1


def lease_owner(info: MemberInfo) -> str:
    """The owner of a node's lease: its id and incarnation, so a second live node with the
    same id is refused (LeaseHeld) instead of renewing the first one's lease."""
    return f"{info.node_id}#{info.incarnation}"


def _local_us() -> int:
    return time.time_ns() // 1000


class StoreMembershipBackend(MembershipBackend):
    """Members as leases plus records in ``store`` (which is not closed here)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._ensured = False
        self._lock = asyncio.Lock()

    async def _ensure(self) -> None:
        """Create the records table once (a racing creator on PostgreSQL is retried)."""
        if self._ensured:
            return
        async with self._lock:
            for attempt in range(_ENSURE_ATTEMPTS):
                try:
                    async with self.store.transaction() as tx:
                        tx.write_tables([TableWrite("ensure", MEMBERS.name, spec=MEMBERS)])
                    break
                except ReadModelError:
                    if attempt == _ENSURE_ATTEMPTS - 1:
                        raise
            self._ensured = True

    def _row(self, info: MemberInfo, left_at: int | None) -> TableWrite:
        values = {
            "node_id": info.node_id,
            "incarnation": info.incarnation,
            "info": msgspec.json.encode(info).decode(),
            "left_at": left_at,
        }
        return TableWrite.upsert(MEMBERS.name, values, ("node_id",))

    async def heartbeat(self, info: MemberInfo) -> int:
        """Renew the node's lease and record in one unit; the database clock at renewal."""
        await self._ensure()
        partition = member_partition(info.node_id)
        async with self.store.transaction() as tx:
            tx.acquire_lease(
                MEMBER_LEASE, lease_owner(info), info.ttl, partition, version=info.incarnation
            )
            tx.write_tables([self._row(info, None)])
        held = await leases.holders(self.store, MEMBER_LEASE, partition)
        if not held or held[0].owner != lease_owner(info):  # cannot happen unless the ttl passed
            raise LeaseHeld(MEMBER_LEASE, partition, info.node_id)
        return held[0].expires_at_us - int(info.ttl * 1_000_000)

    async def leave(self, info: MemberInfo, at_us: int) -> None:
        """Release the lease and mark the record as left, in one unit; a record another
        incarnation wrote since (it took the id over) is left alone."""
        await self._ensure()
        rows = await self.store.read_table(MEMBERS.name, {"node_id": info.node_id}, limit=1)
        ours = not rows or rows[0]["incarnation"] == info.incarnation
        async with self.store.transaction() as tx:
            tx.release_lease(MEMBER_LEASE, lease_owner(info), member_partition(info.node_id))
            if ours:
                tx.write_tables([self._row(info, at_us)])

    async def now_us(self) -> int:
        """The database clock, from a zero-ttl lease (this machine's clock if refused)."""
        try:
            async with self.store.transaction() as tx:
                tx.acquire_lease(CLOCK_LEASE, CLOCK_LEASE, 0.0)
            held = await leases.holders(self.store, CLOCK_LEASE, 0)
        except ChronikError:  # a read-only store (a replica): the best clock left is ours
            return _local_us()
        return held[0].expires_at_us if held else _local_us()

    async def _records(self) -> list[dict[str, Any]]:
        try:
            return await self.store.read_table(MEMBERS.name, order_by=("node_id",))
        except ReadModelError:  # no node ever registered: no table yet
            return []

    async def read(
        self, forget_after: float, now_us: int | None = None
    ) -> tuple[list[Member], int]:
        """Every member live or gone for at most ``forget_after`` s, by the database clock."""
        rows = await self._records()
        if not rows:
            return [], now_us if now_us is not None else _local_us()
        held = {h.partition: h for h in await leases.holders(self.store, MEMBER_LEASE)}
        now = now_us if now_us is not None else await self.now_us()
        out = []
        for row in rows:
            member = _judge(row, held, now)
            if member is not None and (
                member.alive or now - member.last_seen * 1e6 <= forget_after * 1e6
            ):
                out.append(member)
        return out, now

    async def prune(self, forget_after: float, now_us: int) -> int:
        """Delete the records of members gone for longer than ``forget_after`` s."""
        rows = await self._records()
        if not rows:
            return 0
        held = {h.partition: h for h in await leases.holders(self.store, MEMBER_LEASE)}
        gone = []
        for row in rows:
            member = _judge(row, held, now_us)
            if member is None or (
                not member.alive and now_us - member.last_seen * 1e6 > forget_after * 1e6
            ):  # the incarnation in the key: a node that rejoined since is left alone
                gone.append(
                    TableWrite.delete(
                        MEMBERS.name,
                        {"node_id": row["node_id"], "incarnation": row["incarnation"]},
                    )
                )
        if gone:
            async with self.store.transaction() as tx:
                tx.write_tables(gone)
        return len(gone)

    def __repr__(self) -> str:
        return f"<StoreMembershipBackend {self.store!r}>"


def _judge(row: dict[str, Any], held: dict[int, leases.Lease], now_us: int) -> Member | None:
    """The member a record and its lease describe at ``now_us`` (None: an unreadable record)."""
    try:
        info = msgspec.json.decode(row["info"], type=MemberInfo)
    except msgspec.DecodeError:
        return None
    lease = held.get(member_partition(info.node_id))
    if lease is not None and lease.owner != lease_owner(info):
        lease = None  # another incarnation's lease: this record says nothing about it
    ttl_us = int(info.ttl * 1_000_000)
    left_at = row.get("left_at")
    if lease is not None and lease.expires_at_us > now_us and left_at is None:
        state = "alive"
    else:
        state = "left" if left_at is not None else "dead"
    if lease is not None and lease.expires_at_us > 0:
        seen_us = lease.expires_at_us - ttl_us
    elif left_at is not None:
        seen_us = int(left_at)
    else:
        seen_us = int(info.started_at * 1e6)
    if left_at is not None:
        seen_us = max(seen_us, int(left_at))
    epoch = lease.epoch if lease is not None else 0
    return Member.of(info, state=state, last_seen=seen_us / 1e6, lease_epoch=epoch)
