"""Key partitions for brokers without per-key locks (NATS JetStream, RabbitMQ).

Memory and PostgreSQL keep per-key order across the competing consumers of a group with a
per-key rule of their own (a key belongs to one consumer while it holds any of its messages;
a row is claimable only if no older row of its key is left). NATS and RabbitMQ have no such
rule, so a keyed message goes to one of ``partitions`` partitions of its destination, chosen
by a stable hash of the key (``partition_of``), where one consumer at a time handles it:

- NATS: a durable pull consumer per group and partition with ``max_ack_pending=1``: the server
  hands out the partition's next message only once the previous one is acked (or its ack wait
  ran out: then that same message comes back first);
- RabbitMQ: a quorum queue per group and partition with ``x-single-active-consumer``: one
  consumer at a time gets the partition, and when its channel goes (stop, crash, lost
  connection) the broker returns its unacked messages ahead of the rest before the next one
  takes over.

Unkeyed messages keep their one competing destination, so their throughput does not change.
Every process of a deployment must use the same partition count (the default, 8, unless all
set ``partitions``): a publisher hashing to a partition nobody consumes loses the message.

``FanInSource`` merges the sources of one consumer (the unkeyed one and one per partition)
into the single ``Source`` the consumer loop runs on. Imports ``chronik.transports.source``
and ``chronik.errors`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from typing import Final

from chronik.errors import ConfigurationError, TransportUnavailable
from chronik.transports.source import Incoming, Source

__all__ = [
    "DEFAULT_PARTITIONS",
    "MAX_PARTITIONS",
    "FanInSource",
    "check_partitions",
    "partition_of",
    "partition_suffix",
]

log = logging.getLogger("chronik.transports")

DEFAULT_PARTITIONS: Final = 8
MAX_PARTITIONS: Final = 256


def check_partitions(value: object) -> int:
    """``value`` (an int or its text) as a partition count, else ConfigurationError."""
    ok = isinstance(value, int | str) and not isinstance(value, bool)
    text = str(value).strip() if ok else ""
    if not text.isdigit() or not 1 <= int(text) <= MAX_PARTITIONS:
        raise ConfigurationError(
            f"partitions must be an integer 1..{MAX_PARTITIONS}, not {value!r}"
        )
    return int(text)


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key``: the same in every process and release (CRC-32 of UTF-8)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


def partition_suffix(partition: int) -> str:
    """The name segment of a partition (``_3``): no topic segment starts with ``_``, so a
    partition's subject, routing key or queue never meets another topic's."""
    return f"_{partition}"


class FanInSource(Source):
    """One consumer's deliveries from several sources (one task fetching from each), with at
    most ``prefetch`` of them taken and not yet acked or released.

    ``batches[i]`` bounds one fetch of ``sources[i]``: 1 for a partition (its broker hands out
    one message at a time anyway), the prefetch for the unkeyed source.
    """

    def __init__(self, sources: list[Source], batches: list[int], prefetch: int) -> None:
        self.sources = sources
        self.batches = batches
        self.prefetch = prefetch
        intervals = [s.touch_interval for s in sources if s.touch_interval is not None]
        self.touch_interval = min(intervals) if intervals else None
        self._ready: asyncio.Queue[Incoming] = asyncio.Queue()
        self._taken = 0  # fetched from a source, not yet acked or released
        self._room = asyncio.Event()
        self._room.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<FanInSource of {len(self.sources)} taken={self._taken}>"

    def _start(self) -> None:
        if not self._tasks and not self._closed:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._pull(source, batch))
                for source, batch in zip(self.sources, self.batches, strict=True)
            ]

    async def _pull(self, source: Source, batch: int) -> None:
        """Fetch from one source while there is room (pulls never wait for each other, so
        the overshoot is at most one batch per source)."""
        pause = 0.05
        while True:
            while self._taken >= self.prefetch:
                self._room.clear()
                await self._room.wait()
            try:
                got = await source.fetch(min(batch, self.prefetch - self._taken), 1.0)
            except asyncio.CancelledError:
                raise
            except TransportUnavailable as exc:
                log.info("%r: broker unavailable (%s); retrying in %.2fs", self, exc, pause)
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)
                continue
            except Exception:
                log.exception("%r: fetch failed; retrying in %.2fs", self, pause)
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)
                continue
            pause = 0.05
            self._taken += len(got)
            for incoming in got:
                token = (source, incoming)
                self._ready.put_nowait(Incoming(incoming.message, incoming.attempt, token))

    def _done(self) -> None:
        self._taken -= 1
        self._room.set()

    async def fetch(self, limit: int, wait: float) -> list[Incoming]:
        self._start()
        try:
            first = await asyncio.wait_for(self._ready.get(), wait)
        except TimeoutError:
            return []
        out = [first]
        while len(out) < limit and not self._ready.empty():
            out.append(self._ready.get_nowait())
        return out

    async def ack(self, incoming: Incoming) -> None:
        source, inner = incoming.token
        try:
            await source.ack(inner)
        finally:
            self._done()

    async def release(self, incoming: Incoming) -> None:
        source, inner = incoming.token
        try:
            await source.release(inner)
        finally:
            self._done()

    async def touch(self, incoming: Incoming) -> None:
        source, inner = incoming.token
        await source.touch(inner)

    async def close(self) -> None:
        """Stop the fetch tasks, give back what was fetched and not handed out (in order),
        then close every source."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        while not self._ready.empty():
            source, inner = self._ready.get_nowait().token
            with contextlib.suppress(Exception):
                await source.release(inner)
        await asyncio.gather(*(s.close() for s in self.sources), return_exceptions=True)
