"""Inboxes: a consumer records the message ids it processed, so redeliveries do nothing.

Delivery is at least once on every transport, and only NATS, PostgreSQL and memory drop a
re-published message id at the broker (within their dedup window). An inbox makes a consumer's
effect happen once: it wraps a handler, skips ids it has recorded, and records the id *in the
same transaction as the effect*:

- ``StoreInbox(store, "billing")``: the handler gets a chronik ``UnitOfWork`` and adds its
  appends and read-model writes to it; the inbox row (table ``chronik_inbox``) commits with
  them. Works with any store that has read-model tables (memory, SQLite, PostgreSQL),
  whatever the transport.
- ``PostgresInbox`` (``chronik.transports.postgres``): the handler gets an asyncpg connection
  inside the transaction that inserted the inbox row, for effects in that database.
- ``MemoryInbox``: ids in a set, for tests and effects that are themselves in memory.

Two copies of one message handled at the very same moment by two processes can both pass the
check of a ``StoreInbox`` (its write is an upsert); within one process they are serialized.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, TypeVar

from chronik.store.base import EventStore, TableWrite, UnitOfWork
from chronik.store.tables import INBOX
from chronik.transports.base import Delivery, Handler, check_group

__all__ = ["INBOX_TABLE", "Inbox", "MemoryInbox", "StoreInbox"]

INBOX_TABLE: Final = INBOX.name
U = TypeVar("U")


class Inbox(abc.ABC, Generic[U]):
    """Wraps handlers so each message id takes effect once per ``consumer`` name."""

    def __init__(self, consumer: str) -> None:
        self.consumer = check_group(consumer)
        self._locks: dict[str, asyncio.Lock] = {}
        self.skipped = 0

    def handler(self, fn: Callable[[Delivery, U], Awaitable[Any]]) -> Handler:
        """A transport handler that runs ``fn(delivery, unit)`` once per message id."""

        async def handle(delivery: Delivery) -> None:
            lock = self._locks.setdefault(delivery.id, asyncio.Lock())
            try:
                async with lock:
                    if not await self._run(delivery, fn):
                        self.skipped += 1
            finally:
                if not lock.locked() and self._locks.get(delivery.id) is lock:
                    del self._locks[delivery.id]

        return handle

    @abc.abstractmethod
    async def _run(self, delivery: Delivery, fn: Callable[[Delivery, U], Awaitable[Any]]) -> bool:
        """Run ``fn`` and record the id atomically; False if the id was already recorded."""


class MemoryInbox(Inbox[None]):
    """Processed ids in a set (lost with the process)."""

    def __init__(self, consumer: str = "default") -> None:
        super().__init__(consumer)
        self.ids: set[str] = set()

    async def _run(
        self, delivery: Delivery, fn: Callable[[Delivery, None], Awaitable[Any]]
    ) -> bool:
        if delivery.id in self.ids:
            return False
        await fn(delivery, None)
        self.ids.add(delivery.id)
        return True


class StoreInbox(Inbox[UnitOfWork]):
    """Processed ids in the store's ``chronik_inbox`` table, committed with the handler's unit
    of work (events appended, read-model rows written)."""

    def __init__(self, store: EventStore, consumer: str) -> None:
        super().__init__(consumer)
        self.store = store

    async def processed(self, message_id: str) -> bool:
        """True if this consumer has recorded ``message_id``."""
        rows = await self.store.read_table(
            INBOX_TABLE, {"consumer": self.consumer, "message_id": message_id}, limit=1
        )
        return bool(rows)

    async def _run(
        self, delivery: Delivery, fn: Callable[[Delivery, UnitOfWork], Awaitable[Any]]
    ) -> bool:
        if await self.processed(delivery.id):
            return False
        unit = self.store.transaction()
        await fn(delivery, unit)
        row = {"consumer": self.consumer, "message_id": delivery.id, "topic": delivery.topic}
        unit.write_tables([TableWrite.upsert(INBOX_TABLE, row, ("consumer", "message_id"))])
        await unit.commit()
        return True
