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
(within its in-flight batch), or if a publish's outcome was unknown (a retry reuses the message
id) — consumers absorb that with the message id (inbox).

Order: messages of one key (``Message.key``; messages without a key: of one topic) are published
in creation order. A message waiting for its backoff, or marked failed after ``max_attempts``,
holds back every later message of its key until it is sent, retried (``OutboxAdmin.retry``)
or dropped; other keys never wait. ``OutboxAdmin.status`` counts the held-back messages and
names the blocked keys. The outbox table is a system table, created by the store's
migrations: recording a message creates nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from typing import Any, Final, Literal, TypeAlias

import msgspec

from chronik.errors import LeaseHeld, ValidationError
from chronik.outbox_tenants import outbox_rows, stamped
from chronik.store import leases
from chronik.store.base import EventStore, TableWrite, UnitOfWork
from chronik.store.tables import OUTBOX
from chronik.transports.base import Transport
from chronik.transports.message import DEFAULT_MAX_BODY_BYTES, Message, check_message

__all__ = ["OUTBOX", "OutboxAdmin", "OutboxDispatcher", "OutboxStatus", "record"]

log = logging.getLogger("chronik.outbox")
LEASE: Final = "outbox"
PENDING, DONE, FAILED = "pending", "done", "failed"
Kind: TypeAlias = Literal["publish", "send"]


_last_created_us = 0


def _now_us() -> int:
    return time.time_ns() // 1000


def _created_us() -> int:
    """A creation time, strictly increasing within this process (the order of one key's
    messages recorded in one microsecond, or one unit of work, is kept)."""
    global _last_created_us
    _last_created_us = max(_now_us(), _last_created_us + 1)
    return _last_created_us


def _scope(row: dict[str, Any]) -> tuple[str, str]:
    """What a message is ordered within: its key, or its topic if it has none."""
    key = row["msg_key"]
    return ("key", key) if key is not None else ("topic", row["topic"])


def _due(window: list[dict[str, Any]], blocked: set[tuple[str, str]], now: int) -> list[Any]:
    """The rows of ``window`` (oldest first) that may go now: none behind a failed message of
    their key (``blocked``) or behind one waiting for its backoff."""
    due = []
    for row in window:
        scope = _scope(row)
        if scope in blocked:
            continue
        if row["next_attempt_us"] > now:  # backing off: its key's later messages wait
            blocked.add(scope)
            continue
        due.append(row)
    return due


def _scope_name(scope: tuple[str, str]) -> str:
    return f"{scope[0]} {scope[1]}"


def record(tx: UnitOfWork, message: Message, kind: Kind = "publish", tenant: str = "") -> None:
    """Add ``message`` to the outbox in ``tx``: it is stored if and only if ``tx`` commits.

    ``publish`` fans it out to the topic's subscriber groups; ``send`` puts it on the queue of
    that name. Give the message a deterministic id (e.g. the event id) so that a retried unit
    of work records it once. ``tenant``: its command's or event's (chronik.outbox_tenants).
    """
    check_message(message := stamped(message, tenant), DEFAULT_MAX_BODY_BYTES)
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
        "created_us": _created_us(),
        "sent_us": None,
    }
    tx.write_tables([TableWrite.upsert(OUTBOX.name, row, ("id",))])


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
                await leases.release(self.store, LEASE, self.owner)

    def wake(self) -> None:
        """Look for due messages now instead of at the next poll."""
        self._wake.set()

    async def __aenter__(self) -> OutboxDispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Dispatch round after round until cancelled; a failing round raises (run it under a
        supervisor such as ``app.health``, which restarts it with backoff)."""
        while True:
            if await self.dispatch_once() < self.batch_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)

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
        """One round: renew the lease, publish a batch of due messages, mark them. The count.

        A message is skipped (with every later one of its key) while an earlier message of its
        key waits for its backoff or is failed; the round stops publishing at half the lease's
        time to live, so the marks renew the lease before it can expire.
        """
        if await leases.acquire(self.store, LEASE, self.owner, self.lease_ttl) is None:
            self.active = False
            return 0
        self.active = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lease_ttl / 2
        now = _now_us()
        blocked = {_scope(r) for r in await self.store.read_table(OUTBOX.name, {"state": FAILED})}
        limit = self.batch_size * 4
        while True:  # widen the window until it holds a batch of free keys (no starvation)
            window = await self.store.read_table(
                OUTBOX.name, {"state": PENDING}, ("created_us", "id"), limit
            )
            due = _due(window, set(blocked), now)
            if len(due) >= self.batch_size or len(window) < limit:
                break
            limit *= 4
        marks: list[TableWrite] = []
        for row in due:
            if len(marks) >= self.batch_size or loop.time() >= deadline:
                break
            scope = _scope(row)
            if scope in blocked:  # an earlier message of its key failed in this round
                continue
            message = _message(row)
            try:
                async with asyncio.timeout(max(0.001, deadline - loop.time())):
                    if row["kind"] == "send":
                        await self.transport.send(message)
                    else:
                        await self.transport.publish(message)
            except Exception as exc:  # any failure fails this message alone, and holds its key
                marks.append(self._failure(row, exc))
                blocked.add(scope)
                continue
            marks.append(
                TableWrite.upsert(
                    OUTBOX.name, {"id": row["id"], "state": DONE, "sent_us": _now_us()}, ("id",)
                )
            )
        if not marks:
            return 0
        try:
            async with self.store.transaction() as tx:
                tx.acquire_lease(LEASE, self.owner, self.lease_ttl)
                tx.write_tables(marks)
        except LeaseHeld:  # another dispatcher took over; it may publish this batch again
            self.active = False
            return 0
        sent = sum(1 for m in marks if m.row[1] == DONE)
        self.sent += sent
        return len(marks)

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
    blocked: int = 0  # pending messages held back by a failed message of their key
    blocked_keys: list[str] = msgspec.field(default_factory=list)  # "key K" / "topic T"


def _blockers(failed: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The oldest failed message of each scope: it holds back the scope's later messages."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for row in failed:
        held = first.get(_scope(row))
        if held is None or (row["created_us"], row["id"]) < (held["created_us"], held["id"]):
            first[_scope(row)] = row
    return first


def _blocked_by(row: dict[str, Any], blockers: dict[tuple[str, str], dict[str, Any]]) -> str | None:
    """The id of the failed message that holds ``row`` back, if it is pending behind one."""
    first = blockers.get(_scope(row))
    if row["state"] != PENDING or first is None:
        return None
    held = (first["created_us"], first["id"]) < (row["created_us"], row["id"])
    return str(first["id"]) if held else None


class OutboxAdmin:
    """Look at the outbox and act on it, from any process."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def status(self) -> OutboxStatus:
        """Counts by state, the age of the oldest pending message, the active dispatcher, and
        the messages held back behind failed ones (with their keys)."""
        counts = {PENDING: 0, DONE: 0, FAILED: 0}
        oldest: int | None = None
        rows = await self.store.read_table(OUTBOX.name)
        blockers = _blockers([r for r in rows if r["state"] == FAILED])
        blocked = 0
        for row in rows:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
            if row["state"] == PENDING and (oldest is None or row["created_us"] < oldest):
                oldest = row["created_us"]
            blocked += _blocked_by(row, blockers) is not None
        holder = None
        with contextlib.suppress(Exception):
            found = await leases.holders(self.store, LEASE, 0)
            if found and found[0].valid(_now_us()):
                holder = found[0].owner
        age = None if oldest is None else (_now_us() - oldest) / 1e6
        keys = sorted(_scope_name(scope) for scope in blockers)
        return OutboxStatus(
            counts[PENDING], counts[DONE], counts[FAILED], age, holder, blocked, keys
        )

    async def messages(
        self, state: str | None = None, limit: int = 100, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """Outbox rows (oldest first), optionally of one state and one tenant; ``blocked_by``
        names the failed message a pending one waits behind (None if it does not wait)."""
        where = {"state": state} if state else None
        rows = await outbox_rows(self.store, where, limit, tenant)
        blockers = _blockers(await self.store.read_table(OUTBOX.name, {"state": FAILED}))
        return [
            {
                **r,
                "body": bytes(r["body"]).decode("utf-8", "replace"),
                "blocked_by": _blocked_by(r, blockers),
            }
            for r in rows
        ]

    async def retry(self, message_id: str | None = None) -> int:
        """Make failed messages (one, or all) pending again with a fresh attempt count; they keep
        their place (and id): the messages their key held back follow them, in order."""
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
        """Delete failed messages (one, or all): they are never sent, and the messages their
        key held back flow again."""
        rows = await self._select(FAILED, message_id)
        async with self.store.transaction() as tx:
            tx.write_tables([TableWrite.delete(OUTBOX.name, {"id": r["id"]}) for r in rows])
        return len(rows)

    async def _select(self, state: str, message_id: str | None) -> list[dict[str, Any]]:
        where: dict[str, Any] = {"state": state}
        if message_id is not None:
            where["id"] = message_id
        rows = await self.store.read_table(OUTBOX.name, where)
        if message_id is not None and not rows:
            raise ValidationError(f"no failed outbox message {message_id!r}", field="id")
        return rows
