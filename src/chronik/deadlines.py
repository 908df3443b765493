"""Deadlines: durable timers in the store's database that fire once, delivered as messages.

Owners of deadlines are sagas (``SagaContext.schedule``, rows of the saga's own table) and
aggregates: an aggregate schedules by emitting ``DeadlineScheduled`` (``Aggregate.schedule`` or
``schedule(...)`` from a decider) and cancels with ``DeadlineCancelled``; the built-in
``chronik_deadlines`` projection keeps those pending, due at the event's record time plus the
delay, so replays agree. A ``DeadlineScheduler`` (one active per owner table, by a lease per
table; overdue deadlines fire on start) appends a ``chronik.DeadlineFired`` event with an id
derived from the deadline; the owner handles it in order like any event: a saga runs its
deadline handler, an aggregate receives the deadline's command (with an id derived from the
fired event, sent through the decision record of chronik.saga_record, so a rebuild never sends
it again, even if it was rejected). A deadline cancelled or replaced before its owner handles
the fired event does nothing. Due times come from the scheduling event's record time, never from
the clock of the moment it is handled: a replay arms a deadline at the time it had, and one that
already fired appends nothing new when it comes due again (its fired event's id is derived from
the owner, instance, name and due time, and appends are idempotent by event id).
Tests pass a ``ManualClock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from chronik.deadline_events import (
    INTERNAL_EVENTS,
    DeadlineCancelled,
    DeadlineScheduled,
    cancel_deadline,
    schedule,
)
from chronik.errors import ReadModelError
from chronik.messages import Command, EventData, Metadata, RecordedEvent, StreamId
from chronik.projections import Projection, ReadModel, Table, query
from chronik.saga_record import Recorder
from chronik.store import leases
from chronik.store.base import EventStore
from chronik.store.tenant_reads import check_tenant_filter

__all__ = [
    "AGGREGATE_DEADLINES",
    "DEADLINE_FIRED",
    "INTERNAL_EVENTS",
    "LEASE_PREFIX",
    "Clock",
    "DeadlineCancelled",
    "DeadlineScheduled",
    "DeadlineScheduler",
    "ManualClock",
    "SystemClock",
    "aggregate_deadlines",
    "cancel_deadline",
    "deadline_tenant",
    "lease_name",
    "pending_deadlines",
    "schedule",
]

if TYPE_CHECKING:
    from chronik.commands import Dispatch

log = logging.getLogger("chronik.deadlines")
DEADLINE_FIRED: Final = "chronik.DeadlineFired"
DEADLINE_DOMAIN: Final = "chronik.deadlines"
AGGREGATE_DEADLINES: Final = "chronik_deadlines"
LEASE_PREFIX: Final = "deadlines:"  # + the owner: the lease of the scheduler firing its table


class Clock(Protocol):
    """Where "now" comes from (tests pass a ManualClock)."""

    def now_us(self) -> int: ...


class SystemClock:
    """The wall clock."""

    def now_us(self) -> int:
        return time.time_ns() // 1000


class ManualClock:
    """A clock that moves only when told to (starts at the wall clock's now)."""

    def __init__(self, start_us: int | None = None) -> None:
        self.value = time.time_ns() // 1000 if start_us is None else start_us

    def now_us(self) -> int:
        return self.value

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.value += int(seconds * 1_000_000)


_TABLE = Table(
    "aggregate_deadlines",
    {"instance_id": str, "name": str, "due_us": int, "command": str, "payload": bytes},
    primary_key=("instance_id", "name"),
)


def aggregate_deadlines(dispatch: Dispatch) -> Projection:
    """The projection that keeps aggregates' deadlines and delivers the fired ones."""
    projection = Projection(AGGREGATE_DEADLINES, tables=[_TABLE])
    recorder = Recorder(AGGREGATE_DEADLINES, dispatch)

    @projection.on(*INTERNAL_EVENTS.values(), DEADLINE_FIRED)
    async def handle(event: RecordedEvent, rm: ReadModel) -> None:
        past = await recorder.past(rm, event)
        body = event.json()
        if event.type == DEADLINE_FIRED:
            if body.get("owner") != AGGREGATE_DEADLINES:
                return
            key = {"instance_id": body["instance_id"], "name": body["name"]}
            row = await rm.get(_TABLE.name, **key)
            if row is None or row["due_us"] != body["due_us"]:
                return  # cancelled or moved since the scheduler saw it
            rm.delete(_TABLE.name, **key)
            stream = StreamId.parse(row["instance_id"])
            command = Command(
                domain=stream.domain,
                aggregate_id=stream.aggregate_id,
                tenant=stream.tenant,
                type=row["command"],
                payload=msgspec.json.decode(row["payload"]),
                command_id=f"deadline:{event.event_id}",
                metadata=Metadata.caused_by(event),
            )
            record = await recorder.recorded(rm.store, event)
            outcome = await recorder.send(
                rm.store, command, row["instance_id"], event, past=past, record=record
            )
            if outcome.kind == "rejected":
                log.info("deadline %s of %s rejected: %s", body["name"], stream, outcome.detail)
            return
        instance = str(event.stream)
        if event.type == INTERNAL_EVENTS[DeadlineCancelled]:
            rm.delete(_TABLE.name, instance_id=instance, name=body["name"])
            return
        rm.upsert(
            _TABLE.name,
            instance_id=instance,
            name=body["name"],
            due_us=event.recorded_at_us + int(body["after_s"] * 1_000_000),
            command=body["command"],
            payload=msgspec.json.encode(body.get("payload") or {}),
        )

    return projection


class DeadlineOwner(Protocol):
    """Something whose deadlines live in a table of its projection (a saga)."""

    name: str

    @property
    def deadline_table(self) -> str: ...


class DeadlineScheduler:
    """Fires due deadlines by appending ``chronik.DeadlineFired`` events (one scheduler at a
    time holds the lease; the event id is derived from the deadline, so firing twice stores
    one event)."""

    def __init__(
        self,
        store: EventStore,
        owners: Sequence[DeadlineOwner] = (),
        *,
        aggregates: bool = True,
        clock: Clock | None = None,
        owner: str | None = None,
        lease_ttl: float = 10.0,
        poll_interval: float = 0.5,
    ) -> None:
        self.store = store
        self.tables = [(o.name, o.deadline_table) for o in owners]
        if aggregates:
            self.tables.append((AGGREGATE_DEADLINES, _TABLE.name))
        self.clock = clock or SystemClock()
        self.owner = owner or f"{os.getpid()}:{id(self):x}"
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self._task: asyncio.Task[None] | None = None
        #: the owners whose deadline lease this scheduler held at its last round
        self.holding: tuple[str, ...] = ()

    async def fire_due(self) -> int:
        """Append a fired event for every due deadline of the tables whose lease this
        scheduler holds (one lease per table: a node fires only what it keeps, so a node
        without the sagas never holds back their deadlines)."""
        now = self.clock.now_us()
        held = []
        for projection, table in self.tables:
            lease = lease_name(projection)
            if await leases.acquire(self.store, lease, self.owner, self.lease_ttl) is not None:
                held.append((projection, table))
        self.holding = tuple(projection for projection, _ in held)
        fired = 0
        for projection, table in held:
            try:
                rows = await query(self.store, projection, table)
            except ReadModelError:  # the owner has not run yet: no table
                continue
            for row in rows:
                if row["due_us"] > now:
                    continue
                body = {
                    "owner": projection,
                    "instance_id": row["instance_id"],
                    "name": row["name"],
                    "due_us": row["due_us"],
                }
                tenant = deadline_tenant(projection, row)
                if tenant and projection != AGGREGATE_DEADLINES:  # a saga's (per-tenant) row
                    body["tenant"] = tenant
                data = EventData(DEADLINE_FIRED, body, event_id=_fired_id(body))
                await self.store.append(StreamId(DEADLINE_DOMAIN, projection, tenant), [data])
                fired += 1
        return fired

    async def start(self) -> None:
        """Fire due deadlines now (overdue ones after a restart), then every poll interval."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def run(self) -> None:
        """Fire due deadlines every poll interval until cancelled; a failing round raises (run
        it under a supervisor such as ``app.health``, which restarts it with backoff)."""
        while True:
            await self.fire_due()
            await asyncio.sleep(self.poll_interval)

    async def _run(self) -> None:
        while True:
            try:
                await self.fire_due()
            except Exception as exc:
                log.warning("deadline scheduler: %s", exc)
            await asyncio.sleep(self.poll_interval)

    async def stop(self) -> None:
        """Stop firing."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def deadline_tenant(owner: str, row: dict[str, Any]) -> str:
    """The tenant of a deadline row (its fired event is appended in that tenant): an
    aggregate's deadline is its stream's; a saga's, its row's (per tenant; none before)."""
    if owner != AGGREGATE_DEADLINES:
        return str(row.get("tenant") or "")
    return StreamId.parse(row["instance_id"]).tenant


async def pending_deadlines(
    store: EventStore, tenant: str | None = None, owner: str = AGGREGATE_DEADLINES
) -> list[dict[str, Any]]:
    """The pending deadlines of ``owner`` (the aggregates', or a saga's projection name), of
    one tenant (None: every tenant), oldest due first; [] before the owner has run."""
    check_tenant_filter(tenant)
    table = _TABLE.name if owner == AGGREGATE_DEADLINES else f"{owner}_deadlines"
    try:
        rows = await query(store, owner, table, order_by=("due_us", "instance_id", "name"))
    except ReadModelError:
        return []
    return [r for r in rows if tenant is None or deadline_tenant(owner, r) == tenant]


def lease_name(owner: str) -> str:
    """The lease of the scheduler that fires ``owner``'s deadlines (a saga or the aggregates)."""
    return f"{LEASE_PREFIX}{owner}"


def _fired_id(body: dict[str, Any]) -> str:
    key = f"{body['owner']}\x00{body['instance_id']}\x00{body['name']}\x00{body['due_us']}"
    if body.get("tenant"):  # a saga's deadline in a tenant (the default tenant's ids as before)
        key = f"{body['tenant']}\x00{key}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"chronik:deadline:{key}"))
