"""The NATS JetStream transport (nats-py): durable pull consumers, explicit acks, dedup by id.

``nats://host:4222`` (options: ``stream_prefix`` (default ``CHRONIK``), ``ack_wait`` seconds,
``dedup_window`` seconds, ``partitions`` (default 8; the same in every process)). Two streams
are created on open: ``<prefix>_TOPICS`` (subjects ``<root>.t.<topic>``, interest retention: a
message lives until every group acked it) and ``<prefix>_QUEUES`` (``<root>.q.<queue>``,
work-queue retention), where ``<root>`` is ``chronik`` for the default prefix and the prefix in
lower case otherwise, so transports with different prefixes share a server without their
subjects overlapping. Each subscriber group is one durable consumer filtered on its topic,
shared by the group's consumers (competing fetches); each queue is one durable consumer.
``<topic>:<message id>`` travels as ``Nats-Msg-Id``, so JetStream drops a re-published id
within ``dedup_window`` (per topic, like the other adapters). The client reconnects by itself;
consumers resume from their durable state.

Per-key order across competing consumers (``chronik.transports.partitions``): a keyed message
goes to ``<subject>._<p>``, its key's partition, and each group (or queue) has one more durable
consumer per partition, with ``max_ack_pending=1``, that all its consumers pull from: the
server hands out a partition's next message only after the previous one was acked, and a
message whose consumer died (no ack within ``ack_wait``) or stopped (nak) comes back before
any later one. Keys of one partition take turns; unkeyed messages keep their one consumer and
its throughput. Dead letters go to their queue's own subject, unpartitioned.

A publish either reaches the server and is acknowledged (JetStream PubAck) or fails now: the
client keeps no publish buffer while disconnected (``pending_size=0``: a publish then raises
TransportUnavailable, outcome known, nothing sent), and publishes still queued in the client
when the connection drops are discarded, never flushed on reconnect behind the caller's back
(the caller got TransportUnavailable(outcome_unknown=True) and retries with the same id).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
)

from chronik.bounded_close import close_within
from chronik.errors import ConfigurationError, TransportClosed, TransportUnavailable
from chronik.transports.base import Message, Transport
from chronik.transports.partitions import (
    DEFAULT_PARTITIONS,
    FanInSource,
    check_partitions,
    partition_of,
    partition_suffix,
)
from chronik.transports.source import Incoming, Source

__all__ = ["NatsTransport"]

NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)
_ID, _KEY = "Nats-Msg-Id", "Chronik-Key"


class NatsTransport(Transport):
    """Messages in JetStream streams on a NATS server (or cluster)."""

    scheme = "nats"
    dedupes = True
    orders_across_consumers = True

    def __init__(
        self,
        url: str,
        *,
        stream_prefix: str = "CHRONIK",
        ack_wait: float = 30.0,
        dedup_window: float = 120.0,
        partitions: int = DEFAULT_PARTITIONS,
        **options: int,
    ) -> None:
        super().__init__(url, **options)
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        try:
            self.stream_prefix = str(query.pop("stream_prefix", stream_prefix))
            self.ack_wait = float(query.pop("ack_wait", ack_wait))
            self.dedup_window = float(query.pop("dedup_window", dedup_window))
        except ValueError:
            raise ConfigurationError(f"invalid option in the NATS URL {url!r}") from None
        self.partitions = check_partitions(query.pop("partitions", partitions))
        if query:
            raise ConfigurationError(f"unknown NATS URL options: {', '.join(sorted(query))}")
        if not self.stream_prefix.replace("_", "").isalnum() or self.ack_wait <= 0:
            raise ConfigurationError("stream_prefix must be [A-Za-z0-9_]+ and ack_wait > 0")
        self.server = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        self.topics_stream = f"{self.stream_prefix}_TOPICS"
        root = "chronik" if self.stream_prefix == "CHRONIK" else self.stream_prefix.lower()
        self._topics, self._queues = f"{root}.t.", f"{root}.q."
        self.queues_stream = f"{self.stream_prefix}_QUEUES"
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    async def _open(self) -> None:
        try:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    self.server,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    connect_timeout=2,
                    error_cb=_quiet,
                    disconnected_cb=self._disconnected,
                    pending_size=0,  # no publish buffer while disconnected: fail now
                ),
                15,
            )
            self._js = self._nc.jetstream(timeout=5)
            # the server's max_payload bounds a message; keep room for the headers
            self.max_body_bytes = min(self.max_body_bytes, self._nc.max_payload - 65536)
            await self._stream(self.topics_stream, f"{self._topics}>", RetentionPolicy.INTEREST)
            await self._stream(self.queues_stream, f"{self._queues}>", RetentionPolicy.WORK_QUEUE)
        except NATS_ERRORS as exc:
            if self._nc is not None:
                await close_within(self._nc.close(), 5, f"NATS at {self.server}", *NATS_ERRORS)
            raise TransportUnavailable(f"NATS transport at {self.server}: {exc!r}") from exc

    async def _disconnected(self) -> None:
        """Drop the publishes queued in the client: never flush them on reconnect (their
        callers were told the outcome is unknown and retry with the same id)."""
        nc = self._nc
        pending = getattr(nc, "_pending", None)
        if nc is None or not isinstance(pending, list):
            return
        kept = [cmd for cmd in pending if not cmd.startswith((b"PUB ", b"HPUB "))]
        if len(kept) != len(pending):
            nc._pending = kept
            nc._pending_data_size = sum(len(cmd) for cmd in kept)

    async def _stream(self, name: str, subjects: str, retention: RetentionPolicy) -> None:
        js = self.js()
        try:
            await js.stream_info(name)
            return
        except nats.js.errors.NotFoundError:
            pass
        try:
            await js.add_stream(
                name=name,
                subjects=[subjects],
                retention=retention,
                storage=StorageType.FILE,
                duplicate_window=self.dedup_window,
            )
        except nats.js.errors.BadRequestError:  # created meanwhile by another process
            await js.stream_info(name)

    async def _close(self) -> None:
        if self._nc is not None:
            where = f"NATS transport at {self.server}"
            if not await close_within(self._nc.drain(), 5, where, *NATS_ERRORS):
                await close_within(self._nc.close(), 5, where, *NATS_ERRORS)

    def js(self) -> JetStreamContext:
        """The JetStream context (raises TransportClosed after close)."""
        if self._js is None or self.closed:
            raise TransportClosed(f"{self!r} is closed")
        return self._js

    async def _publish(self, message: Message) -> None:
        await self._put(f"{self._topics}{message.topic}", message)

    async def _send(self, message: Message) -> None:
        await self._put(f"{self._queues}{message.topic}", message)

    async def _send_dead_letter(self, message: Message) -> None:
        await self._put(f"{self._queues}{message.topic}", message, partitioned=False)

    async def _put(self, subject: str, m: Message, *, partitioned: bool = True) -> None:
        # JetStream dedupes per stream: scope the id by topic, as the other adapters do
        headers = {**m.headers, _ID: f"{m.topic}:{m.id}"}
        if m.key is not None:
            headers[_KEY] = m.key
            if partitioned:
                subject += "." + partition_suffix(partition_of(m.key, self.partitions))
        js = self.js()
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise TransportUnavailable("NATS is disconnected: not published (retry later)")
        try:
            await js.publish(subject, m.body, timeout=5, headers=headers)
        except nats.errors.OutboundBufferLimitError as exc:  # disconnected meanwhile: not sent
            raise TransportUnavailable(f"NATS publish: {exc!r}") from exc
        except NATS_ERRORS as exc:
            raise TransportUnavailable(f"NATS publish: {exc!r}", outcome_unknown=True) from exc

    async def _source(
        self, kind: Literal["topic", "queue"], name: str, group: str, prefetch: int
    ) -> Source:
        if kind == "topic":
            stream, durable = self.topics_stream, f"t~{group}~{name.replace('.', '~')}"
            subject, policy = f"{self._topics}{name}", DeliverPolicy.NEW
        else:
            stream, durable = self.queues_stream, f"q~{name.replace('.', '~')}"
            subject, policy = f"{self._queues}{name}", DeliverPolicy.ALL
        unkeyed = await self._bind(stream, durable, subject, policy, max(1000, prefetch * 16), name)
        keyed = [  # one at a time per partition: the server keeps each key's order
            await self._bind(
                stream, f"{durable}~k{p}", f"{subject}.{partition_suffix(p)}", policy, 1, name
            )
            for p in range(self.partitions)
        ]
        return FanInSource([unkeyed, *keyed], [min(prefetch, 256)] + [1] * len(keyed), prefetch)

    async def _bind(
        self,
        stream: str,
        durable: str,
        subject: str,
        policy: DeliverPolicy,
        max_ack_pending: int,
        topic: str,
    ) -> _NatsSource:
        """Create the durable consumer if missing and pull from it."""
        js = self.js()
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=policy,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            max_ack_pending=max_ack_pending,
        )
        try:
            try:
                await js.consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                try:
                    await js.add_consumer(stream, config)
                except nats.js.errors.BadRequestError:
                    await js.consumer_info(stream, durable)
            sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
        except NATS_ERRORS as exc:
            raise TransportUnavailable(f"NATS consumer {durable}: {exc!r}") from exc
        return _NatsSource(sub, topic, self.ack_wait / 3)


class _NatsSource(Source):
    def __init__(
        self, sub: JetStreamContext.PullSubscription, topic: str, touch_interval: float
    ) -> None:
        self.sub = sub
        self.topic = topic  # the consumer's filter is its topic (or partition) exactly
        self.touch_interval = touch_interval
        self.expires = 0.0

    async def fetch(self, limit: int, wait: float) -> list[Incoming]:
        wait = min(wait, 0.5)  # a pull request outlives a cancelled fetch by this much
        self.expires = asyncio.get_running_loop().time() + wait
        try:
            msgs = await self.sub.fetch(limit, timeout=wait)
        except nats.errors.TimeoutError:
            return []
        except NATS_ERRORS as exc:
            raise TransportUnavailable(f"NATS fetch: {exc!r}") from exc
        return [self._incoming(m) for m in msgs]

    def _incoming(self, msg: Msg) -> Incoming:
        headers = dict(msg.headers or {})
        scoped = headers.pop(_ID, "")
        message_id = scoped.partition(":")[2] or f"nats-{msg.metadata.sequence.stream}"
        key = headers.pop(_KEY, None)
        message = Message(topic=self.topic, body=msg.data, id=message_id, headers=headers, key=key)
        return Incoming(message, msg.metadata.num_delivered, msg)

    async def ack(self, incoming: Incoming) -> None:
        await _call(incoming.token.ack())

    async def release(self, incoming: Incoming) -> None:
        await _call(incoming.token.nak())

    async def touch(self, incoming: Incoming) -> None:
        await _call(incoming.token.in_progress())

    async def close(self) -> None:
        # The server may still answer our last pull request: let it expire, then give back
        # whatever it delivered that nobody fetched, so it is redelivered at once.
        left = self.expires - asyncio.get_running_loop().time()
        if left > 0:
            await asyncio.sleep(left + 0.05)
        queue = getattr(getattr(self.sub, "_sub", None), "_pending_queue", None)
        while queue is not None and not queue.empty():
            msg = queue.get_nowait()
            if isinstance(msg, Msg) and msg.reply:
                with contextlib.suppress(*NATS_ERRORS):
                    await msg.nak()
        with contextlib.suppress(*NATS_ERRORS):
            await self.sub.unsubscribe()


async def _call(op: Any) -> None:
    try:
        await op
    except nats.errors.MsgAlreadyAckdError:
        pass
    except NATS_ERRORS as exc:
        raise TransportUnavailable(f"NATS ack: {exc!r}") from exc


async def _quiet(exc: Exception) -> None:
    """Connection errors are reported by the calls that meet them."""
