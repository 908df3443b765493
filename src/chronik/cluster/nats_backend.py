"""Membership in a NATS JetStream KV bucket: the ``MembershipBackend`` for NATS deployments.

One key per node (``node.<node id>``, the characters a key cannot hold escaped as ``=XX``) holds
its record: its ``MemberInfo``, the lease's epoch and, after a clean leave, when it left. The
bucket (``chronik.cluster.nats_kv``) keeps one revision per key in file storage.

The lease is the key's revision plus the server's clock:

* A heartbeat reads the key's last revision, then writes the new record with that revision
  as the expected last one (``Nats-Expected-Last-Subject-Sequence``; 0 when the key is absent).
  Two nodes that race for one id cannot both win: the second write fails and is judged again.
* A record written by another incarnation (another process with the same node id) is taken
  over only once it is left or expired; otherwise the heartbeat raises LeaseHeld.
* Expiry is judged by one clock: the JetStream server's. Each record's time is the timestamp
  the server gave its message, never a node's local clock; "now" is the timestamp of a write
  to the bucket's ``clock`` key (a reader that cannot write falls back to its local clock, as
  the store adapter does). A heartbeat answers the server time of its own write, so a running
  node learns the offset to the server clock and reads without writing. In a NATS cluster the
  timestamps come from the stream leader: keep the servers' clocks in sync (NTP).

Gone records are deleted by ``prune`` (against the revision it judged, so a node that
rejoined meanwhile is left alone); the bucket's ``max_age`` (default one day, longer than
any ttl since a live node rewrites its key every ttl/3) sweeps whatever nobody pruned,
delete markers included. nats-server 2.9 has no per-message TTL, so expiry is never left to
the server: this adapter works the same from 2.9 on.
"""

from __future__ import annotations

import re
import time
from typing import Final

import msgspec

from chronik.cluster.backend import MembershipBackend
from chronik.cluster.member import Member, MemberInfo
from chronik.cluster.nats_kv import KvBucket
from chronik.cluster.store_backend import lease_owner, member_partition
from chronik.errors import LeaseHeld, TransportUnavailable

__all__ = ["DEFAULT_BUCKET", "MEMBER_LEASE", "NatsMembershipBackend", "member_key"]

DEFAULT_BUCKET: Final = "chronik_members"
MEMBER_LEASE: Final = "chronik.member"
CLOCK_KEY: Final = "clock"
_NODE: Final = "node."
_KEEP: Final = re.compile(r"[A-Za-z0-9_-]")
_ATTEMPTS: Final = 3


class _Record(msgspec.Struct, frozen=True, kw_only=True):
    """A key's value: the node's record, its lease epoch, when it left (None: it did not)."""

    info: MemberInfo
    epoch: int = 1
    left_at: int | None = None


def member_key(node_id: str) -> str:
    """The KV key of a node id: ``node.`` and the id, each character other than letters,
    digits, ``_`` and ``-`` written ``=XX`` (so ``.``, ``:`` and ``@`` stay one token)."""
    return _NODE + "".join(c if _KEEP.match(c) else f"={ord(c):02X}" for c in node_id)


def _local_us() -> int:
    return time.time_ns() // 1000


def _decode(value: bytes | None) -> _Record | None:
    """The record in a key's value (None: deleted or unreadable)."""
    if value is None:
        return None
    try:
        return msgspec.json.decode(value, type=_Record)
    except msgspec.DecodeError:
        return None


class NatsMembershipBackend(MembershipBackend):
    """Members as records in the JetStream KV bucket ``bucket`` of the NATS server at ``url``.

    Connects on first use and reconnects by itself; ``close()`` (or ``async with``) ends the
    connection. A call made while the server cannot be reached raises TransportUnavailable.
    """

    def __init__(
        self,
        url: str,
        bucket: str = DEFAULT_BUCKET,
        *,
        max_age: float = 86400.0,
        replicas: int = 1,
        timeout: float = 5.0,
    ) -> None:
        self.kv = KvBucket(url, bucket, max_age=max_age, replicas=replicas, timeout=timeout)
        self.url, self.bucket = self.kv.url, self.kv.bucket

    async def heartbeat(self, info: MemberInfo) -> int:
        """Write the node's record over the revision read (taking over another incarnation's
        only once it left or expired by the server clock); the server time of the write."""
        key = member_key(info.node_id)
        await self.kv.exists(create=True)
        for _ in range(_ATTEMPTS):
            last = await self.kv.last(key)
            epoch, expected = 1, 0
            if last is not None:
                expected, value, at_us = last
                record = _decode(value)
                if record is not None:
                    epoch = record.epoch
                    if lease_owner(record.info) != lease_owner(info):
                        if record.left_at is None and await self.now_us() < at_us + _ttl_us(
                            record.info
                        ):
                            raise LeaseHeld(
                                MEMBER_LEASE, member_partition(info.node_id), lease_owner(info)
                            )
                        epoch += 1
            body = msgspec.json.encode(_Record(info=info, epoch=epoch))
            seq = await self.kv.put(key, body, expected)
            if seq is None:
                continue  # another writer came first: judge its record
            at = await self.kv.time_of(seq)
            return at if at is not None else await self.now_us()
        raise LeaseHeld(MEMBER_LEASE, member_partition(info.node_id), lease_owner(info))

    async def leave(self, info: MemberInfo, at_us: int) -> None:
        """Mark the node's record as left at ``at_us`` (only this incarnation's record)."""
        key = member_key(info.node_id)
        if not await self.kv.exists(create=False):
            return
        for _ in range(_ATTEMPTS):
            last = await self.kv.last(key)
            record = None if last is None else _decode(last[1])
            if last is None or record is None or lease_owner(record.info) != lease_owner(info):
                return  # nothing of this incarnation's to release
            left = _Record(info=info, epoch=record.epoch, left_at=at_us)
            if await self.kv.put(key, msgspec.json.encode(left), last[0]) is not None:
                return

    async def now_us(self) -> int:
        """The server clock: the timestamp of a write to the ``clock`` key (this machine's
        clock when no bucket exists yet or the server refuses the write)."""
        if not await self.kv.exists(create=False):
            return _local_us()
        try:
            seq = await self.kv.put(CLOCK_KEY, b"", None)
        except TransportUnavailable as exc:
            if exc.outcome_unknown:  # unreachable, not refused
                raise
            return _local_us()  # refused (permissions, limits): the best clock left
        at = None if seq is None else await self.kv.time_of(seq)
        return at if at is not None else _local_us()

    async def _records(self) -> list[tuple[str, int, _Record | None, int]]:
        """(key, revision, record or None if unreadable, server time) of every node key."""
        return [
            (key, revision, _decode(value), at_us)
            for key, revision, value, at_us in await self.kv.entries(_NODE)
        ]

    async def read(
        self, forget_after: float, now_us: int | None = None
    ) -> tuple[list[Member], int]:
        """Every member live or gone for at most ``forget_after`` s, by the server clock."""
        if not await self.kv.exists(create=False):
            return [], now_us if now_us is not None else _local_us()
        records = await self._records()
        now = now_us if now_us is not None else await self.now_us()
        out = []
        for _, _, record, at_us in records:
            if record is None:
                continue
            member = _judge(record, at_us, now)
            if member.alive or now - member.last_seen * 1e6 <= forget_after * 1e6:
                out.append(member)
        out.sort(key=lambda m: m.node_id)
        return out, now

    async def prune(self, forget_after: float, now_us: int) -> int:
        """Delete the records of members gone for longer than ``forget_after`` s (and the
        unreadable ones), each against the revision judged."""
        if not await self.kv.exists(create=False):
            return 0
        gone = 0
        for key, revision, record, at_us in await self._records():
            if record is not None:
                member = _judge(record, at_us, now_us)
                if member.alive or now_us - member.last_seen * 1e6 <= forget_after * 1e6:
                    continue
            if await self.kv.put(key, b"", revision, delete=True) is not None:
                gone += 1  # else renewed or rejoined meanwhile: left alone
        return gone

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        await self.kv.close()

    async def __aenter__(self) -> NatsMembershipBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        kv = self.kv
        state = "closed" if kv.closed else "open" if kv.connected else "not connected"
        return f"<NatsMembershipBackend {kv.where()} bucket {self.bucket} {state}>"


def _ttl_us(info: MemberInfo) -> int:
    return int(info.ttl * 1_000_000)


def _judge(record: _Record, at_us: int, now_us: int) -> Member:
    """The member a record written at ``at_us`` (server time) describes at ``now_us``."""
    if record.left_at is not None:
        state = "left"
    elif now_us < at_us + _ttl_us(record.info):
        state = "alive"
    else:
        state = "dead"
    seen = max(at_us, record.left_at or 0)
    return Member.of(record.info, state=state, last_seen=seen / 1e6, lease_epoch=record.epoch)
