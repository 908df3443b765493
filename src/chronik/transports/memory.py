"""The in-memory transport: the reference adapter, for tests and single-process apps.

``memory://`` is a broker private to the transport object; ``memory://name`` names a broker
shared by every transport of this process that uses the same name, which outlives them (so a
consumer can disconnect, reconnect and find its group's messages waiting). Published message
ids are remembered for ``dedup_window`` seconds and a repeat is dropped, as NATS does.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from typing import Literal
from urllib.parse import urlsplit

from chronik.errors import ConfigurationError, InvalidMessage, TransportClosed
from chronik.transports.base import Message, Transport
from chronik.transports.dead_letters import StoredDead, redelivery
from chronik.transports.source import Incoming, Source

__all__ = ["MemoryBroker", "MemoryTransport"]

DEDUP_WINDOW = 120.0


class _Entry:
    __slots__ = ("attempts", "message", "owner", "seq")

    def __init__(self, seq: int, message: Message) -> None:
        self.seq = seq
        self.message = message
        self.attempts = 0
        self.owner: object | None = None


class _Queue:
    """The messages of one group (or queue): pending in order, keys owned by a consumer."""

    def __init__(self) -> None:
        self.pending: collections.deque[_Entry] = collections.deque()
        self.key_owner: dict[str, tuple[object, int]] = {}
        self.changed = asyncio.Event()

    def put(self, entry: _Entry) -> None:
        pending = self.pending
        if not pending or pending[-1].seq < entry.seq:
            pending.append(entry)
        else:  # a released entry goes back where it was
            index = next(i for i, e in enumerate(pending) if e.seq > entry.seq)
            pending.insert(index, entry)
        self.changed.set()

    def take(self, owner: object, limit: int) -> list[_Entry]:
        out: list[_Entry] = []
        keep: list[_Entry] = []
        blocked: set[str] = set()
        pending = self.pending
        while pending and len(out) < limit:
            entry = pending.popleft()
            key = entry.message.key
            if key is not None:
                held = self.key_owner.get(key)
                if key in blocked or (held is not None and held[0] is not owner):
                    blocked.add(key)  # a later message of a key another consumer holds waits
                    keep.append(entry)
                    continue
                self.key_owner[key] = (owner, (held[1] if held else 0) + 1)
            entry.attempts += 1
            entry.owner = owner
            out.append(entry)
        pending.extendleft(reversed(keep))
        return out

    def done(self, entry: _Entry) -> None:
        key = entry.message.key
        if key is not None:
            owner, count = self.key_owner[key]
            if count <= 1:
                del self.key_owner[key]
                self.changed.set()
            else:
                self.key_owner[key] = (owner, count - 1)
        entry.owner = None


class MemoryBroker:
    """Groups, queues and recently published ids; shared by transports of one name."""

    def __init__(self, dedup_window: float = DEDUP_WINDOW) -> None:
        self.dedup_window = dedup_window
        self.groups: dict[str, set[str]] = {}  # topic -> groups
        self.queues: dict[tuple[str, str, str], _Queue] = {}
        self.seen: dict[tuple[str, str], float] = {}  # (topic, message id) -> published at
        self._seq = itertools.count()

    def queue(self, kind: str, name: str, group: str) -> _Queue:
        key = (kind, name, group)
        if key not in self.queues:
            self.queues[key] = _Queue()
            if kind == "topic":
                self.groups.setdefault(name, set()).add(group)
        return self.queues[key]

    def first_time(self, kind: str, message: Message) -> bool:
        now = time.monotonic()
        if len(self.seen) > 10_000:
            self.seen = {k: t for k, t in self.seen.items() if now - t < self.dedup_window}
        key = (f"{kind}:{message.topic}", message.id)
        at = self.seen.get(key)
        if at is not None and now - at < self.dedup_window:
            return False
        self.seen[key] = now
        return True

    def publish(self, message: Message) -> None:
        if self.first_time("topic", message):
            for group in self.groups.get(message.topic, ()):
                self.queues["topic", message.topic, group].put(_Entry(next(self._seq), message))

    def send(self, message: Message) -> None:
        if self.first_time("queue", message):
            self.queue("queue", message.topic, "").put(_Entry(next(self._seq), message))

    def deliver(self, kind: str, name: str, group: str, message: Message) -> None:
        """Put ``message`` on one group (or queue) only, with no dedup (a dead letter's retry)."""
        self.queue(kind, name, group).put(_Entry(next(self._seq), message))


_brokers: dict[str, MemoryBroker] = {}


class MemoryTransport(Transport):
    """``memory://`` (private) or ``memory://name`` (shared in this process by name)."""

    scheme = "memory"
    dedupes = True
    orders_across_consumers = True

    def __init__(self, url: str = "memory://", **options: int) -> None:
        super().__init__(url, **options)
        parts = urlsplit(url)
        if parts.scheme != "memory" or parts.path not in ("", "/") or parts.query:
            raise ConfigurationError(f"invalid memory transport URL {url!r}: memory://[name]")
        self.name = parts.netloc
        self.broker = _brokers.setdefault(self.name, MemoryBroker()) if self.name else None

    async def _open(self) -> None:
        if self.broker is None:
            self.broker = MemoryBroker()

    async def _close(self) -> None:
        pass

    def _broker(self) -> MemoryBroker:
        if self.broker is None or self.closed:
            raise TransportClosed(f"{self!r} is closed")
        return self.broker

    async def _publish(self, message: Message) -> None:
        self._broker().publish(message)

    async def _send(self, message: Message) -> None:
        self._broker().send(message)

    async def _source(
        self, kind: Literal["topic", "queue"], name: str, group: str, prefetch: int
    ) -> Source:
        return _MemorySource(self._broker().queue(kind, name, group))

    # --- dead letters (chronik.transports.dead_letters): entries waiting on the queue -----------

    def _waiting(self, queue: str) -> collections.deque[_Entry]:
        found = self._broker().queues.get(("queue", queue, ""))
        return found.pending if found is not None else collections.deque()

    async def _dead_page(self, queue: str, after: str | None, limit: int) -> list[StoredDead]:
        start = -1 if after is None else _number(after, "after")
        page = [e for e in self._waiting(queue) if e.seq > start][:limit]
        return [StoredDead(str(e.seq), e.message, len(e.message.body)) for e in page]

    async def _dead_get(self, queue: str, handle: str) -> StoredDead | None:
        seq = _number(handle, "id")
        entry = next((e for e in self._waiting(queue) if e.seq == seq), None)
        return None if entry is None else StoredDead(handle, entry.message, len(entry.message.body))

    async def _dead_take(self, queue: str, handle: str, retry: bool) -> StoredDead | None:
        stored = await self._dead_get(queue, handle)
        if stored is None:
            return None
        if retry:
            again = redelivery(stored)
            self._broker().deliver(again.kind, again.name, again.group, again.message)
        waiting = self._waiting(queue)
        waiting.remove(next(e for e in waiting if e.seq == int(handle)))
        return stored


def _number(handle: str, field: str) -> int:
    if not handle.isdigit():
        raise InvalidMessage(f"invalid dead letter id {handle!r}: a number", field=field)
    return int(handle)


class _MemorySource(Source):
    def __init__(self, queue: _Queue) -> None:
        self.queue = queue
        self.closed = False

    async def fetch(self, limit: int, wait: float) -> list[Incoming]:
        queue = self.queue
        deadline = time.monotonic() + wait
        while not self.closed:
            queue.changed.clear()
            entries = queue.take(self, limit)
            if entries:
                return [Incoming(e.message, e.attempts, e) for e in entries]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            try:
                await asyncio.wait_for(queue.changed.wait(), left)
            except TimeoutError:
                return []
        return []

    async def ack(self, incoming: Incoming) -> None:
        entry: _Entry = incoming.token
        if entry.owner is self:
            self.queue.done(entry)

    async def release(self, incoming: Incoming) -> None:
        entry: _Entry = incoming.token
        if entry.owner is self:
            self.queue.done(entry)
            self.queue.put(entry)

    async def close(self) -> None:
        self.closed = True
        self.queue.changed.set()
