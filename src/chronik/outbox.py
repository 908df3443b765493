"""The outbox: messages for other services, committed with the events, published afterwards.

Record a message in the same unit of work as the events it belongs to::

    async with store.transaction() as tx:
        tx.append(stream, events, expected)
        outbox.record(tx, Message(topic="customer.registered", body=..., id=event_id))

An ``OutboxDispatcher`` holds the outbox lease (one active dispatcher per store, by the
database's clock; others stand by), reads due messages in creation order, publishes or sends
each on the transport, and marks it done only after the transport confirmed, in a unit of work
that renews the lease: a dispatcher that lost its lease cannot mark anything, so a message is
never lost and is published twice only if a dispatcher died between publishing and marking
(within its in-flight batch) — consumers absorb that with the message id (inbox). Failures are
retried with backoff up to ``max_attempts``, then the message is marked failed;
``OutboxAdmin`` lists, retries and drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from typing import Any, Final, Literal

import msgspec

from chronik.errors import LeaseHeld, ValidationError
from chronik.projections import leases
from chronik.projections.system import LEASES
from chronik.store.base import EventStore, TableSpec, TableWrite, UnitOfWork
from chronik.transports.base import Transport
from chronik.transports.message import DEFAULT_MAX_BODY_BYTES, Message, check_message

__all__ = ["OUTBOX", "OutboxAdmin", "OutboxDispatcher", "OutboxStatus", "record"]

log = logging.getLogger("chronik.outbox")
OUTBOX: Final = TableSpec(
    "outbox_messages",
    (
        ("id", "TEXT"),
        ("kind", "TEXT"),
        ("topic", "TEXT"),
        ("body", "BLOB"),
        ("headers", "TEXT"),
        ("msg_key", "TEXT"),
        ("state", "TEXT"),
        ("attempts", "INTEGER"),
        ("next_attempt_us", "INTEGER"),
        ("last_error", "TEXT"),
        ("created_us", "INTEGER"),
        ("sent_us", "INTEGER"),
    ),
    ("id",),
    (("state", "created_us"),),
)
LEASE: Final = "outbox"
_ENSURE: Final = TableWrite("ensure", OUTBOX.name, spec=OUTBOX)
_ENSURE_LEASES: Final = TableWrite("ensure", LEASES.name, spec=LEASES)
PENDING, DONE, FAILED = "pending", "done", "failed"


def _now_us() -> int:
    return time.time_ns() // 1000


def record(tx: UnitOfWork, message: Message, kind: Literal["publish", "send"] = "publish") -> None:
    """Add ``message`` to the outbox in ``tx``: it is stored if and only if ``tx`` commits.

    ``publish`` fans it out to the topic's subscriber groups; ``send`` puts it on the queue of
    that name. Give the message a deterministic id (e.g. the event id) so that a retried unit
    of work records it once.
    """
    check_message(message, DEFAULT_MAX_BODY_BYTES)
    if kind not in ("publish", "send"):
        raise ValidationError(f"kind must be 'publish' or 'send', not {kind!r}", field="kind")
    row = {
        "id": message.id,
        "kind": kind,
        "topic": message.topic,
        "body": message.body,
        "headers": json.dumps(message.headers, sort_keys=True),
        "msg_key": message.key,
        "state": PENDING,
        "attempts": 0,
        "next_attempt_us": 0,
        "last_error": None,
        "created_us": _now_us(),
        "sent_us": None,
    }
    tx.write_tables([_ENSURE, TableWrite.upsert(OUTBOX.name, row, ("id",))])


def _message(row: dict[str, Any]) -> Message:
    return Message(
        topic=row["topic"],
        body=bytes(row["body"]),
        id=row["id"],
        headers=json.loads(row["headers"] or "{}"),
        key=row["msg_key"],
    )


class OutboxDispatcher:
    """Publishes outbox messages on a transport; ``async with OutboxDispatcher(...)``."""

    def __init__(
        self,
        store: EventStore,
        transport: Transport,
        *,
        owner: str | None = None,
        batch_size: int = 100,
        lease_ttl: float = 10.0,
        poll_interval: float = 0.1,
        max_attempts: int = 10,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
    ) -> None:
        if lease_ttl <= 2 * poll_interval:
            raise ValidationError("lease_ttl must be more than twice the poll interval")
        if type(max_attempts) is not int or max_attempts < 1:
            raise ValidationError("max_attempts must be an int >= 1")
        self.store = store
        self.transport = transport
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.batch_size = batch_size
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.active = False  # holds the lease
        self.sent = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._ensured = False

    async def start(self) -> None:
        """Start dispatching in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outbox {self.owner}")

    async def stop(self) -> None:
        """Stop after the current batch and give the lease up."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.active:
            self.active = False
            with contextlib.suppress(Exception):
                async with self.store.transaction() as tx:
                    tx.write_tables([leases.write(LEASE, self.owner, self.lease_ttl, "release")])

    def wake(self) -> None:
        """Look for due messages now instead of at the next poll."""
        self._wake.set()

    async def __aenter__(self) -> OutboxDispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.dispatch_once()
            except Exception as exc:  # the store or the transport is down: try again later
                log.warning("outbox dispatch failed: %s", exc)
                busy = 0
            if busy < self.batch_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def dispatch_once(self) -> int:
        """One round: renew the lease, publish a batch of due messages, mark them. The count."""
        if not self._ensured:
            async with self.store.transaction() as tx:
                tx.write_tables([_ENSURE, _ENSURE_LEASES])
            self._ensured = True
        if await leases.acquire(self.store, LEASE, self.owner, self.lease_ttl) is None:
            self.active = False
            return 0
        self.active = True
        now = _now_us()
        rows = [
            r
            for r in await self.store.read_table(
                OUTBOX.name, {"state": PENDING}, ("created_us",), self.batch_size * 4
            )
            if r["next_attempt_us"] <= now
        ][: self.batch_size]
        if not rows:
            return 0
        marks: list[TableWrite] = []
        for row in rows:
            message = _message(row)
            try:
                if row["kind"] == "send":
                    await self.transport.send(message)
                else:
                    await self.transport.publish(message)
            except Exception as exc:
                marks.append(self._failure(row, exc))
                continue
            marks.append(
                TableWrite.upsert(
                    OUTBOX.name, {"id": row["id"], "state": DONE, "sent_us": _now_us()}, ("id",)
                )
            )
        try:
            async with self.store.transaction() as tx:
                tx.write_tables([leases.write(LEASE, self.owner, self.lease_ttl), *marks])
        except LeaseHeld:  # another dispatcher took over; it may publish this batch again
            self.active = False
            return 0
        sent = sum(1 for m in marks if m.row[1] == DONE)
        self.sent += sent
        return len(rows)

    def _failure(self, row: dict[str, Any], exc: Exception) -> TableWrite:
        attempts = row["attempts"] + 1
        state = FAILED if attempts >= self.max_attempts else PENDING
        delay = min(self.max_backoff, self.backoff * 2 ** (attempts - 1))
        log.warning("outbox message %s: attempt %d failed: %s", row["id"], attempts, exc)
        values = {
            "id": row["id"],
            "state": state,
            "attempts": attempts,
            "next_attempt_us": _now_us() + int(delay * 1_000_000),
            "last_error": f"{type(exc).__name__}: {exc}"[:1000],
        }
        return TableWrite.upsert(OUTBOX.name, values, ("id",))


class OutboxStatus(msgspec.Struct):
    """What ``chronik outbox status`` shows."""

    pending: int
    done: int
    failed: int
    oldest_pending_age_s: float | None
    dispatcher: str | None  # the owner holding the lease, if unexpired


class OutboxAdmin:
    """Look at the outbox and act on it, from any process."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def _ensure(self) -> None:
        async with self.store.transaction() as tx:
            tx.write_tables([_ENSURE, _ENSURE_LEASES])

    async def status(self) -> OutboxStatus:
        """Counts by state, the age of the oldest pending message, the active dispatcher."""
        await self._ensure()
        counts = {PENDING: 0, DONE: 0, FAILED: 0}
        oldest: int | None = None
        for row in await self.store.read_table(OUTBOX.name):
            counts[row["state"]] = counts.get(row["state"], 0) + 1
            if row["state"] == PENDING and (oldest is None or row["created_us"] < oldest):
                oldest = row["created_us"]
        holder = None
        with contextlib.suppress(Exception):
            found = await self.store.read_table(LEASES.name, {"name": LEASE}, limit=1)
            if found and found[0]["expires_at"] > _now_us():
                holder = found[0]["owner"]
        age = None if oldest is None else (_now_us() - oldest) / 1e6
        return OutboxStatus(counts[PENDING], counts[DONE], counts[FAILED], age, holder)

    async def messages(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Outbox rows (oldest first), optionally of one state."""
        await self._ensure()
        where = {"state": state} if state else None
        rows = await self.store.read_table(OUTBOX.name, where, ("created_us",), limit)
        return [{**r, "body": bytes(r["body"]).decode("utf-8", "replace")} for r in rows]

    async def retry(self, message_id: str | None = None) -> int:
        """Make failed messages (one, or all) pending again with a fresh attempt count."""
        rows = await self._select(FAILED, message_id)
        async with self.store.transaction() as tx:
            tx.write_tables(
                [
                    TableWrite.upsert(
                        OUTBOX.name,
                        {"id": r["id"], "state": PENDING, "attempts": 0, "next_attempt_us": 0},
                        ("id",),
                    )
                    for r in rows
                ]
            )
        return len(rows)

    async def drop(self, message_id: str | None = None) -> int:
        """Delete failed messages (one, or all): they are never sent."""
        rows = await self._select(FAILED, message_id)
        async with self.store.transaction() as tx:
            tx.write_tables([TableWrite.delete(OUTBOX.name, {"id": r["id"]}) for r in rows])
        return len(rows)

    async def _select(self, state: str, message_id: str | None) -> list[dict[str, Any]]:
        await self._ensure()
        where: dict[str, Any] = {"state": state}
        if message_id is not None:
            where["id"] = message_id
        rows = await self.store.read_table(OUTBOX.name, where)
        if message_id is not None and not rows:
            raise ValidationError(f"no failed outbox message {message_id!r}", field="id")
        return rows
