"""The Kafka transport's consumer side: one group member, offsets committed in order.

A ``KafkaSource`` is one aiokafka consumer in a consumer group. Kafka acknowledges by offset,
one per partition, so ``ack`` records that a delivery is done and commits, per partition, the
offset after the highest *contiguous* handled one: the consumer loop runs handlers of
different keys concurrently, and a message is never committed past an unhandled earlier one
of its partition (a crash redelivers from the first unhandled offset; the later, handled ones
come again too: at least once, dedupe with the inbox).

``release`` seeks the partition back to its first uncommitted offset (everything fetched from
it after that comes again; deliveries fetched before the seek become stale and their acks are
ignored). The delivery ``attempt`` is counted in this process only (Kafka keeps no delivery
count): after a crash a message starts again at attempt 1.

Rebalances (a member joins, stops or dies): before a partition is revoked, the member waits
(up to ``drain_timeout``) until every delivery it fetched from that partition was handled,
commits, and only then lets it go, so the next owner starts after the last handled message
and a key's messages are never handled by two members at once. A member that dies holds its
partitions until the broker's session timeout ends its membership; the next owner then
starts from the last commit (redeliveries, in order). Imports aiokafka and the transport's
``source`` and ``message`` modules.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from chronik.errors import TransportUnavailable
from chronik.transports.message import Message
from chronik.transports.source import Incoming, Source

__all__ = ["ID_HEADER", "KafkaSource", "record_message"]

log = logging.getLogger("chronik.transports")
ID_HEADER = "chronik.id"  # a dot: never a chronik header name, so never a clash


class _Partition:
    """What one member fetched from one partition and has not committed yet."""

    def __init__(self) -> None:
        self.fetched: collections.deque[int] = collections.deque()  # offsets, ascending
        self.done: set[int] = set()
        self.commit_to: int | None = None  # the next offset to consume, once committed
        self.committed: int | None = None


class KafkaSource(Source, ConsumerRebalanceListener):  # type: ignore[misc]
    """One member of a Kafka consumer group (see the module docstring)."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        name: str,
        drain_timeout: float,
        ensure: Callable[[], Awaitable[Any]],
    ) -> None:
        self.consumer = consumer
        self.name = name  # the chronik topic or queue
        self.drain_timeout = drain_timeout
        self.ensure = ensure  # (re)creates the Kafka topic (after a broker lost it)
        self.parts: dict[TopicPartition, _Partition] = {}
        self.attempts: dict[tuple[TopicPartition, int], int] = {}
        self.closing = False
        self.rebalancing = False
        self._changed = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._idle_since: float | None = None

    def __repr__(self) -> str:
        return f"<KafkaSource {self.name} partitions={sorted(p.partition for p in self.parts)}>"

    # --- fetching ------------------------------------------------------------------------------

    async def fetch(self, limit: int, wait: float) -> list[Incoming]:
        if self.closing:
            return []
        await self._maybe_ensure()
        try:
            batches = await self.consumer.getmany(timeout_ms=int(wait * 1000), max_records=limit)
        except KafkaError as exc:
            raise TransportUnavailable(f"Kafka fetch: {exc!r}") from exc
        lists: list[list[tuple[int, Incoming]]] = []
        for tp, records in batches.items():
            part = self.parts.get(tp)
            if part is None:  # assigned before our listener saw it (first join)
                part = self.parts[tp] = _Partition()
            lists.append([])
            for record in records:
                part.fetched.append(record.offset)
                key = (tp, record.offset)
                attempt = self.attempts[key] = self.attempts.get(key, 0) + 1
                incoming = Incoming(self._message(record), attempt, (tp, record.offset, part))
                lists[-1].append((int(record.timestamp), incoming))
        # several partitions in one batch: handed out in publish-time order, not partition
        # order, and each partition still in offset order (a merge, never a sort)
        return [incoming for _, incoming in heapq.merge(*lists, key=lambda pair: pair[0])]

    async def _maybe_ensure(self) -> None:
        """With no partition assigned for a while (the broker lost the topic), create it
        again so the group can resume."""
        loop = asyncio.get_running_loop()
        if self.consumer.assignment():
            self._idle_since = None
            return
        if self._idle_since is None:
            self._idle_since = loop.time()
        elif loop.time() - self._idle_since > 3.0:
            self._idle_since = loop.time()
            with contextlib.suppress(Exception):
                await self.ensure()

    def _message(self, record: Any) -> Message:
        return record_message(record, self.name)

    # --- acknowledging -------------------------------------------------------------------------

    async def ack(self, incoming: Incoming) -> None:
        tp, offset, part = _token(incoming)
        if self.parts.get(tp) is not part:  # revoked or released since: stale
            return
        part.done.add(offset)
        moved = False
        while part.fetched and part.fetched[0] in part.done:
            part.done.discard(part.fetched.popleft())
            moved = True
        if moved:
            part.commit_to = part.fetched[0] if part.fetched else offset + 1
            self._changed.set()
            if not self.rebalancing and not self.closing:
                await self._commit({tp: part})

    async def _commit(self, parts: dict[TopicPartition, _Partition]) -> None:
        async with self._commit_lock:
            offsets = {
                tp: p.commit_to
                for tp, p in parts.items()
                if p.commit_to is not None and p.commit_to != p.committed
            }
            if not offsets:
                return
            try:
                await self.consumer.commit(offsets)
            except KafkaError as exc:
                # a rebalance or an outage: the partition's next owner (maybe us) starts from
                # the last commit, so the messages after it come again (at least once)
                log.info("%r: commit failed (%s); they will be redelivered", self, exc)
                return
            for tp, offset in offsets.items():
                parts[tp].committed = offset
                for key in [k for k in self.attempts if k[0] == tp and k[1] < offset]:
                    del self.attempts[key]

    async def release(self, incoming: Incoming) -> None:
        tp, offset, part = _token(incoming)
        if self.closing or self.parts.get(tp) is not part:
            return
        start = part.fetched[0] if part.fetched else offset
        fresh = self.parts[tp] = _Partition()
        fresh.commit_to, fresh.committed = part.commit_to, part.committed
        try:
            self.consumer.seek(tp, start)
        except (KafkaError, AssertionError, ValueError) as exc:  # no longer assigned
            log.info("%r: seek back failed (%s)", self, exc)

    # --- rebalances ----------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Let the deliveries of the revoked partitions finish, commit, then let them go."""
        gone = {tp: self.parts[tp] for tp in revoked if tp in self.parts}
        if not gone:
            return
        self.rebalancing = True
        if not self.closing:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.drain_timeout
            while any(p.fetched for p in gone.values()) and not self.closing:
                left = deadline - loop.time()
                if left <= 0:
                    log.warning("%r: handlers still running at a rebalance: redelivered", self)
                    break
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
        await self._commit(gone)
        for tp in gone:
            self.parts.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Track the new partitions from scratch (they start at their last commit)."""
        for tp in assigned:
            if tp not in self.parts:
                self.parts[tp] = _Partition()
        self.rebalancing = False

    # --- closing -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Commit what was handled, then leave the group (its partitions move on at once)."""
        if self.closing:
            return
        self.closing = True
        self._changed.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._commit(dict(self.parts)), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.consumer.stop(), 10)


def record_message(record: Any, name: str) -> Message:
    """The chronik message of a Kafka record of topic (or queue) ``name``: its id from the
    ``chronik.id`` header (else derived from partition and offset), the other headers as text."""
    headers: dict[str, str] = {}
    message_id = ""
    for header, value in record.headers or ():
        text = bytes(value or b"").decode("utf-8", "replace")
        if header == ID_HEADER:
            message_id = text
        else:
            headers[str(header)] = text
    key = None if record.key is None else bytes(record.key).decode("utf-8", "replace")
    return Message(
        topic=name,
        body=bytes(record.value or b""),
        id=message_id or f"kafka-{record.partition}-{record.offset}",
        headers=headers,
        key=key,
    )


def _token(incoming: Incoming) -> tuple[TopicPartition, int, _Partition]:
    tp, offset, part = incoming.token
    return tp, int(offset), part
