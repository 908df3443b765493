"""The Kafka transport (aiokafka): topics with partitions, consumer groups, offset commits.

``kafka://host:port[,host:port]`` with options in the query string or as keywords:
``client_id`` (default ``chronik``), ``partitions`` (default 8: the partition count of the
topics this transport creates), ``replication_factor`` (default 1), ``topic_prefix`` (default
``chronik``), ``enable_idempotence`` (default false, see below), ``timeout`` (seconds a publish
may take, default 10), ``drain_timeout`` (seconds a member waits at a rebalance for its
running handlers, default 30) and ``session_timeout`` (seconds without a heartbeat after which
the group gives a dead member's partitions to the others, default 6; brokers refuse values
outside their ``group.min/max.session.timeout.ms``, 6..1800 s on Apache Kafka; members join a
group in about half of it).

Names. A chronik topic ``orders.v1`` is the Kafka topic ``chronik.t.orders.v1``, a queue
``jobs`` is ``chronik.q.jobs``. Chronik names are lower case; ``_`` becomes ``U`` (Kafka
refuses topics that differ only by ``.`` versus ``_``, and chronik allows both), so the mapping
is reversible and two chronik names never meet. A name longer than Kafka's 249 characters is
cut and ends with ``.H`` and a hash of the whole name (upper case: no plain name ends so).
Topics are created on first use through the admin client with ``partitions`` partitions.

Patterns. Each subscriber group of a topic is one Kafka consumer group
(``<prefix>:<topic>:<group>``); a new group starts at the end of its topic's partitions (it
gets every message published after ``subscribe`` returned). A queue is a topic with one
consumer group (``<prefix>:<queue>``) that starts at the beginning, so a message sent before
anyone listens waits.

Order. A keyed message goes to the partition of its key (CRC-32 of the key modulo the topic's
partition count, as ``chronik.transports.partitions`` computes it, the same in every
process); unkeyed messages and dead letters go to partition 0, so they keep their publish
order (at the price of one member at a time handling them). Kafka gives each partition to one
member of a group at a time, so a key's messages are handled in order across the competing
consumers of a group; at a rebalance a member hands a partition over only after its running
handlers finished and it committed (``chronik.transports.kafka_source``), except when it
dies (kill -9, lost network): then the partition moves after the session timeout and the new
owner redelivers, in order, from the last commit.

Delivery. At least once: ``ack`` commits offsets, per partition never past an unhandled
message; failures, retries, park, stop and dead letters (sent to the dead-letter queue's
topic) run in the shared consumer loop. Kafka has no per-message delivery count: the
``attempt`` restarts at 1 after a crash, so a message that crashes its consumer every time is
not caught by the retry limit. Each message carries its id in the ``chronik.id`` header;
the broker does not deduplicate (``dedupes`` is False): a retried publish may be stored twice
and consumers dedupe with an inbox (``chronik.transports.inbox``). ``enable_idempotence``
turns on Kafka's idempotent producer, which only removes duplicates of the client's own
internal retries; it is off by default because some Kafka-protocol brokers (Tansu, used by
the tests) refuse it.

Dead-letter browsing (``dead_letters``/``inspect``/``retry``/``drop``) lives in
``chronik.transports.kafka_dead_letters``: letters are read by offset without a group, and
since a Kafka record cannot be deleted, retried and dropped ones are recorded in a settled
topic (``<prefix>.s.<queue>``) beside the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from chronik.errors import ConfigurationError, TransportClosed, TransportUnavailable
from chronik.transports.base import Message, Transport
from chronik.transports.kafka_source import ID_HEADER, KafkaSource
from chronik.transports.partitions import DEFAULT_PARTITIONS, check_partitions, partition_of
from chronik.transports.source import Source

__all__ = ["KafkaTransport", "kafka_topic"]

MAX_TOPIC = 249
_PREFIX_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]")
_TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS


def kafka_topic(prefix: str, kind: Literal["topic", "queue"], name: str) -> str:
    """The Kafka topic of chronik topic (or queue) ``name`` (see the module docstring)."""
    full = f"{prefix}.{'t' if kind == 'topic' else 'q'}.{name.replace('_', 'U')}"
    if len(full) <= MAX_TOPIC:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:20]
    return f"{full[: MAX_TOPIC - 22]}.H{digest}"


def _flag(value: object, field: str) -> bool:
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{field} must be true or false, not {value!r}")


def _seconds(value: object, field: str, low: float, high: float) -> float:
    try:
        number = float(str(value))
    except ValueError:
        number = float("nan")
    if not low <= number <= high:
        raise ConfigurationError(f"{field} must be a number of seconds {low}..{high}")
    return number


class KafkaTransport(Transport):
    """Messages in Kafka topics, one consumer group per chronik group or queue."""

    scheme = "kafka"
    dedupes = False
    orders_across_consumers = True

    def __init__(
        self,
        url: str,
        *,
        client_id: str = "chronik",
        partitions: int = DEFAULT_PARTITIONS,
        replication_factor: int = 1,
        topic_prefix: str = "chronik",
        enable_idempotence: bool = False,
        timeout: float = 10.0,
        drain_timeout: float = 30.0,
        session_timeout: float = 6.0,
        **options: int,
    ) -> None:
        super().__init__(url, **options)
        parts = urlsplit(url)
        if parts.scheme != "kafka" or parts.path not in ("", "/") or parts.fragment:
            raise ConfigurationError(f"invalid Kafka URL {url!r}: kafka://host:port[,host:port]")
        if "@" in parts.netloc:
            raise ConfigurationError("Kafka URL: credentials (SASL) are not supported")
        self.servers = [_server(s, url) for s in parts.netloc.split(",")]
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.client_id = str(query.pop("client_id", client_id))
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.client_id):
            raise ConfigurationError(f"client_id must be 1-64 of [A-Za-z0-9._-], not {client_id!r}")
        self.partitions = check_partitions(query.pop("partitions", partitions))
        replicas = str(query.pop("replication_factor", replication_factor))
        if not replicas.isdigit() or not 1 <= int(replicas) <= 16:
            raise ConfigurationError(f"replication_factor must be 1..16, not {replicas!r}")
        self.replication_factor = int(replicas)
        self.topic_prefix = str(query.pop("topic_prefix", topic_prefix))
        if not _PREFIX_RE.fullmatch(self.topic_prefix):
            raise ConfigurationError(
                f"topic_prefix must be [a-z][a-z0-9-]{{0,31}}, not {self.topic_prefix!r}"
            )
        idempotent = query.pop("enable_idempotence", enable_idempotence)
        self.enable_idempotence = _flag(idempotent, "enable_idempotence")
        self.timeout = _seconds(query.pop("timeout", timeout), "timeout", 0.1, 600)
        drain = query.pop("drain_timeout", drain_timeout)
        self.drain_timeout = _seconds(drain, "drain_timeout", 0, 600)
        session = query.pop("session_timeout", session_timeout)
        self.session_timeout = _seconds(session, "session_timeout", 1, 1800)
        if query:
            raise ConfigurationError(f"unknown Kafka URL options: {', '.join(sorted(query))}")
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._counts: dict[str, int] = {}  # Kafka topic -> partition count (created or seen)

    # --- lifecycle -----------------------------------------------------------------------------

    async def _open(self) -> None:
        ms = int(self.timeout * 1000)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.servers,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=self.enable_idempotence,
            request_timeout_ms=ms,
            retry_backoff_ms=100,
            metadata_max_age_ms=5000,
            max_request_size=self.max_body_bytes + 65536,
        )
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self.servers, client_id=self.client_id, request_timeout_ms=ms
        )
        try:
            await asyncio.wait_for(self._producer.start(), self.timeout + 5)
            await asyncio.wait_for(self._admin.start(), self.timeout + 5)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._close()
            raise TransportUnavailable(f"Kafka at {','.join(self.servers)}: {exc!r}") from exc

    async def _close(self) -> None:
        producer, admin, self._producer, self._admin = self._producer, self._admin, None, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)
        if admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), 10)

    def producer(self) -> AIOKafkaProducer:
        """The producer (raises TransportClosed after close)."""
        if self._producer is None or self.closed:
            raise TransportClosed(f"{self!r} is closed")
        return self._producer

    def topic(self, kind: Literal["topic", "queue"], name: str) -> str:
        """The Kafka topic of a chronik topic or queue."""
        return kafka_topic(self.topic_prefix, kind, name)

    async def ensure_topic(self, topic: str) -> int:
        """Create ``topic`` if missing; its partition count."""
        known = self._counts.get(topic)
        if known is not None:
            return known
        if self._admin is None or self.closed:
            raise TransportClosed(f"{self!r} is closed")
        new = NewTopic(topic, self.partitions, self.replication_factor)
        try:
            answer = await asyncio.wait_for(self._admin.create_topics([new]), self.timeout)
            for error in getattr(answer, "topic_errors", ()):
                if error[1] not in (0, _TOPIC_EXISTS):
                    raise TransportUnavailable(f"Kafka: cannot create topic {topic}: {error}")
            count = 0
            for _ in range(50):  # the metadata may lag the creation a little
                found = await self.producer().partitions_for(topic)
                count = len(found or ())
                if count:
                    break
                await asyncio.sleep(0.1)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise TransportUnavailable(f"Kafka: creating topic {topic}: {exc!r}") from exc
        if not count:
            raise TransportUnavailable(f"Kafka: topic {topic} has no partitions")
        self._counts[topic] = count
        return count

    # --- publishing ----------------------------------------------------------------------------

    async def _publish(self, message: Message) -> None:
        await self._put(self.topic("topic", message.topic), message, keyed=True)

    async def _send(self, message: Message) -> None:
        await self._put(self.topic("queue", message.topic), message, keyed=True)

    async def _send_dead_letter(self, message: Message) -> None:
        await self._put(self.topic("queue", message.topic), message, keyed=False)

    async def _put(self, topic: str, m: Message, *, keyed: bool) -> None:
        count = await self.ensure_topic(topic)
        partition = partition_of(m.key, count) if keyed and m.key is not None else 0
        headers = [(ID_HEADER, m.id.encode())]
        headers += [(name, value.encode()) for name, value in m.headers.items()]
        key = None if m.key is None else m.key.encode("utf-8", "surrogatepass")
        producer = self.producer()
        try:
            await asyncio.wait_for(
                producer.send_and_wait(
                    topic, m.body, key=key, partition=partition, headers=headers
                ),
                self.timeout + 1,
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            self._counts.pop(topic, None)  # the broker may have lost it: check on the retry
            raise TransportUnavailable(f"Kafka publish: {exc!r}", outcome_unknown=True) from exc

    # --- consuming -----------------------------------------------------------------------------

    async def _source(
        self, kind: Literal["topic", "queue"], name: str, group: str, prefetch: int
    ) -> Source:
        topic = self.topic(kind, name)
        group_id = (
            f"{self.topic_prefix}:{name}:{group}"
            if kind == "topic"
            else (f"{self.topic_prefix}:{name}")
        )
        await self.ensure_topic(topic)
        if kind == "topic":
            await self._start_at_end(topic, group_id)
        ms = int(self.timeout * 1000)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers,
            client_id=self.client_id,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # only when the group has no commit (lost by a broker)
            max_poll_records=max(1, min(prefetch, 500)),
            request_timeout_ms=max(ms, 5000),
            retry_backoff_ms=100,
            metadata_max_age_ms=3000,
            heartbeat_interval_ms=min(500, int(self.session_timeout * 1000) // 3),
            session_timeout_ms=int(self.session_timeout * 1000),
            rebalance_timeout_ms=int((self.drain_timeout + 10) * 1000),
            max_poll_interval_ms=max(300_000, int((self.drain_timeout + 10) * 1000)),
        )

        async def ensure() -> None:
            self._counts.pop(topic, None)
            await self.ensure_topic(topic)

        source = KafkaSource(consumer, name, self.drain_timeout, ensure)
        try:
            await asyncio.wait_for(consumer.start(), self.timeout + 5)
            # subscribing after start joins the group in the background: a join may wait for
            # the other members to drain (a rebalance), subscribe need not
            consumer.subscribe([topic], listener=source)
        except (KafkaError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise TransportUnavailable(f"Kafka consumer {group_id}: {exc!r}") from exc
        return source

    async def _start_at_end(self, topic: str, group_id: str) -> None:
        """A new group starts at the end of every partition: commit the end offsets for the
        partitions the group has no commit for yet."""
        count = await self.ensure_topic(topic)
        tps = [TopicPartition(topic, p) for p in range(count)]
        probe = AIOKafkaConsumer(
            bootstrap_servers=self.servers,
            client_id=self.client_id,
            group_id=group_id,
            enable_auto_commit=False,
            request_timeout_ms=max(int(self.timeout * 1000), 5000),
        )
        try:
            await asyncio.wait_for(probe.start(), self.timeout + 5)
            probe.assign(tps)
            missing = [tp for tp in tps if await probe.committed(tp) is None]
            if missing:
                ends = await probe.end_offsets(missing)
                await probe.commit({tp: ends[tp] for tp in missing})
        except (KafkaError, OSError, TimeoutError) as exc:
            raise TransportUnavailable(f"Kafka group {group_id}: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(probe.stop(), 10)


def _server(text: str, url: str) -> str:
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        host, port = text.strip(), "9092"
    if not _HOST_RE.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"invalid Kafka server {text!r} in {url!r}: host:port")
    return f"{host}:{port}"
