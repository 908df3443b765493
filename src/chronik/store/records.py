"""The records of the store port: what a unit of work hands an adapter, and what comes back.

Plain immutable values (named tuples and frozen dataclasses) with the few rules every adapter
applies to them the same way (``check_expected``, ``match_duplicate``, ``unit_error``). This
module imports nothing of ``chronik.store``: every other store module may import it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from chronik.dcb import Query
from chronik.errors import ChronikError, DuplicateEventError, StoreUnavailable
from chronik.messages import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Checkpoint,
    Expected,
    Position,
    RecordedEvent,
    Snapshot,
    StreamId,
)

__all__ = [
    "DEFAULT_MAX_APPEND_EVENTS",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_MAX_SNAPSHOT_BYTES",
    "HEALTHY",
    "AppendRequest",
    "ConditionCheck",
    "FaultHook",
    "LeaseOp",
    "PreparedEvent",
    "ReadPage",
    "StoreHealth",
    "StoredEvent",
    "StreamCheck",
    "StreamDelete",
    "TableSpec",
    "TableWrite",
    "WriteUnit",
    "Written",
    "cancelled_by_caller",
    "check_expected",
    "is_retry",
    "match_duplicate",
    "merge_tagged",
    "unit_error",
]

DEFAULT_MAX_PAYLOAD_BYTES: Final = 1024 * 1024
DEFAULT_MAX_APPEND_EVENTS: Final = 1000
DEFAULT_MAX_SNAPSHOT_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Whether the store's writer works, as ``EventStore.health`` reports it.

    ``ok`` is False while writes fail for a reason of the store's own (StoreUnavailable: disk
    full, connection lost, a lock held too long) or once the store is closed; it turns True
    again at the next successful write. ``detail`` says why, ``since`` is the wall-clock time
    (``time.time()``) of the first failure of the current run of them (None while ok) and
    ``failures`` counts that run. Refusals of a unit's own making (WrongExpectedVersion,
    ReadModelError, ValidationError ...) never make a store unhealthy.
    """

    ok: bool
    detail: str = "ok"
    since: float | None = None
    failures: int = 0


HEALTHY: Final = StoreHealth(True)

#: A fault-injection hook (``chronik.testing.faults``): called with the name of each write or
#: read step an adapter takes (``begin``, ``lock``, ``checkpoint``, ``tables``, ``snapshot``,
#: ``append``, ``commit``, ``fetch``) and the unit being written when the step belongs to one
#: (None for batch-wide steps such as SQLite's ``begin`` and ``commit``, and for reads). An
#: exception it raises is raised by the step.
FaultHook = Callable[[str, "WriteUnit | None"], None]


class PreparedEvent(NamedTuple):
    """An event validated and encoded, ready for an adapter to store; outbox rules
    (``chronik.OutboxRule``) get it beside the decided event (``chronik.PreparedEvent``)."""

    event_id: str
    type: str
    schema_version: int
    payload: bytes
    metadata: bytes | None  # None when empty
    content_type: str
    tags: tuple[str, ...] = ()  # sorted, no repeats


class AppendRequest(NamedTuple):
    """One append of a unit: a stream, its events and the expectation."""

    stream: StreamId
    events: list[PreparedEvent]
    expected: Expected


class TableSpec(NamedTuple):
    """A read-model table: validated identifiers, SQL column types, primary key columns."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (column, one of SQL_TYPES)
    primary_key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()


class TableWrite(NamedTuple):
    """One read-model write committed with a unit of work.

    ``op`` is ``ensure`` (create ``spec`` if missing), ``drop``, ``clear`` (delete every row),
    ``upsert`` (insert ``row`` into ``columns``, or update those columns of the row with the
    same primary key ``key``) or ``delete`` (the row whose ``columns`` equal ``row``). Values
    are always bound parameters. Leases are not table writes: see ``LeaseOp``.
    """

    op: str
    table: str
    columns: tuple[str, ...] = ()
    row: tuple[Any, ...] = ()
    spec: TableSpec | None = None
    key: tuple[str, ...] = ()  # upsert: the primary key columns

    @classmethod
    def upsert(cls, table: str, values: dict[str, Any], key: tuple[str, ...]) -> TableWrite:
        """An upsert of ``values`` (column -> value) keyed by the ``key`` columns."""
        return cls("upsert", table, tuple(values), tuple(values.values()), None, key)

    @classmethod
    def delete(cls, table: str, values: dict[str, Any]) -> TableWrite:
        """A delete of the row whose columns equal ``values``."""
        return cls("delete", table, tuple(values), tuple(values.values()))


class LeaseOp(NamedTuple):
    """One lease operation of a unit of work (see ``chronik.store.leases``), already checked.

    ``acquire`` claims or renews (name, partition) for ``owner`` until the database clock
    passes now + ``ttl_us``, publishing ``version``; the whole unit fails with LeaseHeld while
    another owner's lease is unexpired, and the epoch grows by one when the owner changes (a
    new lease starts at 1). ``release`` lets the owner's lease expire now (a no-op for another
    owner's lease).
    """

    op: str  # "acquire" or "release"
    name: str
    partition: int
    owner: str
    ttl_us: int = 0
    version: int = 0


class ConditionCheck(NamedTuple):
    """A DCB append condition of a unit (``chronik.AppendCondition``), already checked.

    The unit fails with AppendConditionFailed (naming the item and the position of the first
    match) when an event matching ``query`` is stored after ``after`` (any such event when
    None), counting only what was stored before the unit. ``event_ids`` are the events the
    condition guards: when every one is stored already the unit is a retry and the check is
    skipped, so the append answers with its original result (``is_retry``).
    """

    query: Query
    after: Position | None
    event_ids: tuple[str, ...]
    #: Only events of this tenant count (``append_tagged``'s tenant); None: every tenant's.
    tenant: str | None = None


class StreamCheck(NamedTuple):
    """A check-only expectation on a stream (``tx.expect``): the unit fails with
    WrongExpectedVersion unless ``stream`` is at ``expected`` before the unit, and the stream
    cannot change before the unit commits. Skipped, like a condition, when every one of
    ``event_ids`` (the unit's events) is stored already."""

    stream: StreamId
    expected: Expected
    event_ids: tuple[str, ...]


class StreamDelete(NamedTuple):
    """A soft or hard delete of a unit (``chronik.store.deletion``): ``append`` is the index in
    ``WriteUnit.appends`` of the request that writes the deletion event (with the caller's
    expectation). Once that event is written the stream reads empty from the event on (its
    ``truncate_before`` moves past it) and, when ``hard``, is tombstoned. When the request turns
    out to be a retry of a stored deletion, the stream is changed only if the event is still
    its last one (nothing appended since)."""

    append: int
    hard: bool


class WriteUnit(NamedTuple):
    """What an adapter commits as one transaction: appends, checkpoints, snapshots, tables,
    leases, and the checks (DCB conditions, stream expectations) it must pass first."""

    appends: list[AppendRequest]
    checkpoints: list[Checkpoint]
    snapshots: list[Snapshot]
    tables: Sequence[TableWrite] = ()
    leases: Sequence[LeaseOp] = ()
    conditions: Sequence[ConditionCheck] = ()
    expects: Sequence[StreamCheck] = ()
    deletes: Sequence[StreamDelete] = ()


#: units that committed, each with its results (one per append)
Written = list[tuple[WriteUnit, list[AppendResult]]]


class StoredEvent(NamedTuple):
    """An event found in the store by id, as ``match_duplicate`` compares it."""

    event: PreparedEvent
    stream: StreamId
    sequence: int
    position: Position
    recorded_at_us: int


class ReadPage(NamedTuple):
    """One page of the global order, as ``EventStore.read_page`` returns it."""

    #: The events after the requested position, in commit order.
    events: list[RecordedEvent]
    #: When not None: no event of the page's filter commits at or before this position other
    #: than ``events``, so a reader may continue from here instead of rescanning what it does
    #: not want (stores whose commit order is position order, filtered short pages only).
    scanned: Position | None


def cancelled_by_caller() -> bool:
    """Whether the current task is being cancelled (a CancelledError raised now is real)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a writer thread
        return False
    return task is not None and task.cancelling() > 0


def unit_error(exc: BaseException, what: str) -> BaseException:
    """The error a unit fails with when writing it raised ``exc``: ``exc`` itself when it is a
    ChronikError, KeyboardInterrupt / SystemExit or a real cancellation of the caller, else a
    StoreUnavailable naming ``exc`` (chained to it), e.g. a driver's OverflowError or a
    CancelledError that no one asked for."""
    if isinstance(exc, ChronikError | KeyboardInterrupt | SystemExit):
        return exc
    if isinstance(exc, asyncio.CancelledError) and cancelled_by_caller():
        return exc
    error = StoreUnavailable(f"{what} failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def is_retry(event_ids: Sequence[str], stored: Callable[[str], bool]) -> bool:
    """Whether a check guarding ``event_ids`` is skipped: they are all ``stored`` already."""
    return bool(event_ids) and all(stored(i) for i in event_ids)


def check_expected(expected: Expected, actual: int | None) -> bool:
    """Whether a stream at ``actual`` (None: missing) meets ``expected``."""
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return actual is None
    if expected is STREAM_EXISTS:
        return actual is not None
    return actual == expected


def match_duplicate(request: AppendRequest, stored: Sequence[StoredEvent]) -> AppendResult:
    """The original result of a retried append, or DuplicateEventError if it differs.

    ``stored`` holds, for each event id of ``request`` found in the store, the stored event with
    its stream, sequence, position and record time, in the request's order. The result equals
    the one the original append returned.
    """
    events = request.events
    if len(stored) != len(events):
        raise DuplicateEventError(
            events[0].event_id if not stored else stored[0][0].event_id,
            "but the retried append does not match the stored one event for event",
        )
    first_seq = stored[0][2]
    for i, (new, (old, stream, seq, _pos, _at)) in enumerate(zip(events, stored, strict=True)):
        if stream != request.stream:
            raise DuplicateEventError(new.event_id, f"in another stream ({stream})")
        if seq != first_seq + i:
            raise DuplicateEventError(new.event_id, "at a different place in the stream")
        if old != new:
            raise DuplicateEventError(new.event_id, "with different content")
    return AppendResult(
        request.stream,
        first_seq,
        first_seq + len(events) - 1,
        stored[-1].position,
        tuple(s.position for s in stored),
        stored[0].recorded_at_us,
    )


def merge_tagged(results: Sequence[AppendResult]) -> AppendResult:
    """The one result of a tagged append from its per-event results (one stream each)."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    positions = tuple(r.position for r in results)
    return AppendResult(first.stream, 0, 0, positions[-1], positions, first.recorded_at_us)
