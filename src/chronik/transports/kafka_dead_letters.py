"""The Kafka transport's dead letters: read by offset, settled through a marker topic.

A dead letter is a record of the dead-letter queue's Kafka topic (``chronik.q.<queue>``, sent
to partition 0 by the consumer loop); its handle is ``partition:offset``. Browsing reads with
a consumer of no group (assign, seek, read up to the end offsets taken at the start), so it
consumes nothing and commits nothing; a topic that does not exist is not created by a read.

A Kafka record cannot be deleted, so each dead-letter queue has a **settled topic** beside it
(``chronik.s.<queue>``, markers on partition 0, keyed by handle) that says which letters are
retried or dropped; pages skip those, and ``inspect`` of one is a NotFound. Every call reads
the markers it has not seen yet (each process keeps what it read, so the cost is the new
markers). The topic is plain: each letter is settled once, so compaction would keep as many
records; give it the retention of the dead-letter topic.

Retry and drop are one protocol, built so a crash at any step neither loses a letter nor
delivers it twice to a consumer with an inbox:

1. **claim**: write a ``claim`` marker (a fresh claim id and the time), then read the marker
   partition up to it. The letter is ours if no ``done`` marker names it and no earlier claim
   of it is still alive (younger than ``CLAIM_LEASE``, not released): the log's order decides
   between concurrent retries of several processes, the loser gets a NotFound. Within one
   process, calls on a queue run one at a time (a lock), so the second finds the first's
   ``done`` marker;
2. **republish** (retry only): the original message, with its original message id, to its
   topic with the ``chronik-only-group`` header naming the letter's group (the consumers of
   the topic's other groups acknowledge it without handling it, ``chronik.transports
   .consumer``), to its key's partition; a queue's letter goes back on its queue;
3. **done**: write a ``done`` marker; the letter is settled.

A crash after 1 leaves the letter listed and claimed: after the lease a retry claims it again.
A crash after 2 (or a publish whose outcome is unknown) may publish the message once more on
that later retry: it carries the same message id, so the group's inbox
(``chronik.transports.inbox``) absorbs it, as with any Kafka redelivery. A publish that
fails writes a ``release`` marker, so the letter can be retried at once. The lease assumes the
clocks of the processes that retry agree within seconds. Deleting and re-creating a
dead-letter topic starts its offsets again: delete its settled topic with it. Loaded by
``chronik.transports.dead_letters`` for ``kafka://`` URLs; imports the Kafka adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, Final, Literal

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from chronik.errors import InvalidMessage, TransportUnavailable
from chronik.transports.dead_letters import ONLY_GROUP, Redelivery, StoredDead, redelivery
from chronik.transports.kafka import KafkaTransport
from chronik.transports.kafka_source import record_message

__all__ = ["CLAIM_LEASE", "KafkaDeadLetters", "settled_topic"]

#: seconds a claim on a dead letter holds against other retries unless its claimant finishes
CLAIM_LEASE: Final = 60.0
_ERRORS = (KafkaError, OSError, TimeoutError, AssertionError)
_BATCH = 500


class _Marker(msgspec.Struct, frozen=True):
    """One record of a settled topic."""

    kind: Literal["claim", "release", "done"]
    letter: str
    claim: str
    action: Literal["retry", "drop"]
    at: float


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Marker).decode


class _Settled:
    """What this process read of one settled topic."""

    def __init__(self) -> None:
        self.next = 0  # the next offset to read on partition 0
        self.done: set[str] = set()
        self.claims: dict[str, list[tuple[int, str, float]]] = {}  # offset, claim id, at
        self.released: set[str] = set()

    def add(self, offset: int, marker: _Marker) -> None:
        if marker.kind == "done":
            self.done.add(marker.letter)
        elif marker.kind == "release":
            self.released.add(marker.claim)
        else:
            self.claims.setdefault(marker.letter, []).append((offset, marker.claim, marker.at))

    def live(self, letter: str, before: int, at: float) -> bool:
        """Whether a claim on ``letter`` written before offset ``before`` holds at ``at`` (a
        claim dated a lease or more ahead, by a skewed clock, holds no more than an old one)."""
        return any(
            offset < before and claim not in self.released and abs(at - then) < CLAIM_LEASE
            for offset, claim, then in self.claims.get(letter, ())
        )


def settled_topic(transport: KafkaTransport, queue: str) -> str:
    """The Kafka topic of the settled markers of dead-letter queue ``queue``."""
    topic = transport.topic("queue", queue)
    prefix = f"{transport.topic_prefix}.q."
    return f"{transport.topic_prefix}.s.{topic[len(prefix) :]}"


@contextlib.contextmanager
def _kafka(what: str, unknown: bool = False) -> Iterator[None]:
    try:
        yield
    except _ERRORS as exc:
        raise TransportUnavailable(
            f"Kafka dead letters: {what}: {exc!r}", outcome_unknown=unknown
        ) from exc


class KafkaDeadLetters:
    """Dead letters of one ``KafkaTransport`` (see the module docstring)."""

    def __init__(self, transport: KafkaTransport) -> None:
        self.t = transport
        self._settled: dict[str, _Settled] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # --- the port's primitives -----------------------------------------------------------------

    async def page(self, queue: str, after: str | None, limit: int) -> list[StoredDead]:
        start = (0, -1) if after is None else _handle(after, "after")
        out: list[StoredDead] = []
        async with self._calling(queue) as reader:
            state = await self._refresh(reader, queue)
            topic = self.t.topic("queue", queue)
            for p in range(start[0], await self._count(topic)):
                first = start[1] + 1 if p == start[0] else 0
                async with contextlib.aclosing(self._read(reader, topic, p, first)) as records:
                    async for record in records:
                        handle = f"{p}:{record.offset}"
                        if handle not in state.done:
                            out.append(_stored(queue, handle, record))
                            if len(out) >= limit:
                                return out
        return out

    async def get(self, queue: str, handle: str) -> StoredDead | None:
        where = _handle(handle, "id")
        async with self._calling(queue) as reader:
            state = await self._refresh(reader, queue)
            if handle in state.done:
                return None
            return await self._one(reader, queue, where)

    async def take(self, queue: str, handle: str, retry: bool) -> StoredDead | None:
        where = _handle(handle, "id")
        async with self._calling(queue) as reader:
            state = await self._refresh(reader, queue)
            if handle in state.done or state.live(handle, state.next, time.time()):
                return None
            stored = await self._one(reader, queue, where)
            if stored is None:
                return None
            again = redelivery(stored) if retry else None  # no original topic: nothing claimed
            action: Literal["retry", "drop"] = "retry" if retry else "drop"
            claim = _Marker("claim", handle, uuid.uuid4().hex, action, time.time())
            offset = await self._mark(queue, claim)
            state = await self._refresh(reader, queue)
            if handle in state.done or state.live(handle, offset, claim.at):
                return None  # another process claimed it first
            if again is not None:
                try:
                    await self._republish(again)
                except TransportUnavailable:
                    with contextlib.suppress(TransportUnavailable):
                        await self._mark(queue, msgspec.structs.replace(claim, kind="release"))
                    raise
            await self._mark(queue, msgspec.structs.replace(claim, kind="done", at=time.time()))
            state.done.add(handle)
            return stored

    # --- reading -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _calling(self, queue: str) -> AsyncIterator[AIOKafkaConsumer]:
        """One call on ``queue`` at a time in this process, with a reader of no group."""
        lock = self._locks.setdefault(queue, asyncio.Lock())
        async with lock:
            self.t.producer()  # TransportClosed after close
            ms = max(int(self.t.timeout * 1000), 5000)
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.t.servers,
                client_id=self.t.client_id,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                request_timeout_ms=ms,
                retry_backoff_ms=100,
                fetch_max_wait_ms=20,  # no long polls: a read reassigns partitions often
                max_partition_fetch_bytes=max(self.t.max_body_bytes + 65536, 1 << 20),
            )
            try:
                with _kafka("starting a reader"):
                    await asyncio.wait_for(reader.start(), self.t.timeout + 5)
                yield reader
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader.stop(), 10)

    async def _count(self, topic: str) -> int:
        """The partition count of ``topic``, 0 if it does not exist (a read creates none)."""
        if topic not in self.t._counts:
            admin = self.t._admin
            if admin is None:
                return 0
            with _kafka("listing topics"):
                found = await asyncio.wait_for(admin.list_topics(), self.t.timeout)
            if topic not in found:
                return 0
        return await self.t.ensure_topic(topic)

    async def _read(
        self, reader: AIOKafkaConsumer, topic: str, partition: int, start: int, stop: int = -1
    ) -> AsyncGenerator[Any, None]:
        """The records of ``topic``'s ``partition`` from offset ``start`` to ``stop`` (-1: the
        end offset when called), in offset order."""
        tp = TopicPartition(topic, partition)
        loop = asyncio.get_running_loop()
        with _kafka(f"reading {topic}"):
            reader.assign([tp])
            first = (await reader.beginning_offsets([tp]))[tp]
            end = (await reader.end_offsets([tp]))[tp]
            end = end if stop < 0 else min(end, stop)
            position = max(start, first)
            if position >= end:
                return
            reader.seek(tp, position)
            deadline = loop.time() + self.t.timeout
            while position < end:
                batch = await reader.getmany(tp, timeout_ms=200, max_records=_BATCH)
                records = batch.get(tp, [])
                for record in records:
                    if record.offset >= end:
                        return
                    yield record
                position = await reader.position(tp)
                if records:
                    deadline = loop.time() + self.t.timeout
                elif loop.time() > deadline:
                    raise TimeoutError(f"no records below offset {end} of {topic}")

    async def _one(
        self, reader: AIOKafkaConsumer, queue: str, where: tuple[int, int]
    ) -> StoredDead | None:
        """The dead letter at ``where`` (partition, offset), None if there is none."""
        partition, offset = where
        if partition >= await self._count(self.t.topic("queue", queue)):
            return None
        topic = self.t.topic("queue", queue)
        async with contextlib.aclosing(
            self._read(reader, topic, partition, offset, offset + 1)
        ) as it:
            async for record in it:
                if record.offset == offset:
                    return _stored(queue, f"{partition}:{offset}", record)
        return None

    async def _refresh(self, reader: AIOKafkaConsumer, queue: str) -> _Settled:
        """The settled markers of ``queue``, read up to the end of the settled topic."""
        state = self._settled.setdefault(queue, _Settled())
        topic = settled_topic(self.t, queue)
        if not await self._count(topic):
            return state
        tp = TopicPartition(topic, 0)
        with _kafka(f"reading {topic}"):
            reader.assign([tp])
            end = (await reader.end_offsets([tp]))[tp]
        if end < state.next:  # the topic was lost and created again (an empty broker)
            state = self._settled[queue] = _Settled()
        async for record in self._read(reader, topic, 0, state.next):
            with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError):
                state.add(record.offset, _decode(record.value or b""))
            state.next = record.offset + 1
        return state

    # --- writing -------------------------------------------------------------------------------

    async def _mark(self, queue: str, marker: _Marker) -> int:
        """Write ``marker`` to the settled topic of ``queue``; its offset."""
        topic = settled_topic(self.t, queue)
        await self.t.ensure_topic(topic)
        with _kafka(f"writing to {topic}", unknown=True):
            sent = await asyncio.wait_for(
                self.t.producer().send_and_wait(
                    topic, _encode(marker), key=marker.letter.encode(), partition=0
                ),
                self.t.timeout + 1,
            )
        return int(sent.offset)

    async def _republish(self, again: Redelivery) -> None:
        """The original message to its group alone (``ONLY_GROUP``), or back on its queue."""
        m = again.message
        if again.group:
            m = msgspec.structs.replace(m, headers={**m.headers, ONLY_GROUP: again.group})
        await self.t._put(self.t.topic(again.kind, m.topic), m, keyed=True)


def _stored(queue: str, handle: str, record: Any) -> StoredDead:
    message = record_message(record, queue)
    return StoredDead(handle, message, len(message.body))


def _handle(handle: str, field: str) -> tuple[int, int]:
    partition, colon, offset = handle.partition(":")
    if (
        not colon
        or not partition.isdigit()
        or not offset.isdigit()
        or len(partition) > 5
        or len(offset) > 18
    ):
        raise InvalidMessage(f"invalid dead letter id {handle!r}: partition:offset", field=field)
    return int(partition), int(offset)
