"""The event store port: what every adapter provides, and the checks they all share.

Adapters implement a handful of primitives (``_write``, the page readers, ``_head`` ...); the
public methods here validate input once, page through reads and build subscriptions, so every
adapter has the same semantics and the conformance suite in ``chronik.testing`` holds them to it.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple, Self

import msgspec

from chronik.errors import (
    ChronikError,
    ConfigurationError,
    DuplicateEventError,
    InvalidEventType,
    InvalidExpectedVersion,
    PayloadTooLarge,
    StoreClosed,
    StoreUnavailable,
    TooManyEvents,
    ValidationError,
)
from chronik.messages import (
    ANY,
    JSON,
    NO_STREAM,
    STREAM_EXISTS,
    TYPE_NAME_RE,
    AppendResult,
    Checkpoint,
    EventData,
    Expected,
    ExpectedState,
    Metadata,
    Position,
    RecordedEvent,
    Snapshot,
    StreamId,
    StreamInfo,
)
from chronik.store.tables import (
    Condition,
    TableSpec,
    TableWrite,
    check_after,
    check_identifier,
    check_table_write,
    check_values,
    check_where,
)
from chronik.values import check_json_value, decode_json, encode_json

if TYPE_CHECKING:
    from chronik.store.subscription import Subscription

__all__ = [
    "DEFAULT_MAX_APPEND_EVENTS",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_MAX_SNAPSHOT_BYTES",
    "AppendRequest",
    "EventStore",
    "FaultHook",
    "PreparedEvent",
    "ReadPage",
    "StoreHealth",
    "TableSpec",
    "TableWrite",
    "UnitOfWork",
    "WriteUnit",
    "check_identifier",
]

DEFAULT_MAX_PAYLOAD_BYTES: Final = 1024 * 1024
DEFAULT_MAX_APPEND_EVENTS: Final = 1000
DEFAULT_MAX_SNAPSHOT_BYTES: Final = 16 * 1024 * 1024
READ_PAGE: Final = 1000
_TYPE_RE = TYPE_NAME_RE
_CONTENT_TYPE_RE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+(;.{0,64})?", re.I)
_encoder = msgspec.json.Encoder()
_metadata_encoder = msgspec.json.Encoder(order="sorted")  # canonical bytes, whatever the source
_log = logging.getLogger("chronik.store")


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
    """An event validated and encoded, ready for an adapter to store."""

    event_id: str
    type: str
    schema_version: int
    payload: bytes
    metadata: bytes | None  # None when empty
    content_type: str


class AppendRequest(NamedTuple):
    """One append of a unit: a stream, its events and the expectation."""

    stream: StreamId
    events: list[PreparedEvent]
    expected: Expected


class WriteUnit(NamedTuple):
    """What an adapter commits as one transaction: appends, checkpoints, snapshots, tables."""

    appends: list[AppendRequest]
    checkpoints: list[Checkpoint]
    snapshots: list[Snapshot]
    tables: Sequence[TableWrite] = ()


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


def check_expected(expected: Expected, actual: int | None) -> bool:
    """Whether a stream at ``actual`` (None: missing) meets ``expected``."""
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return actual is None
    if expected is STREAM_EXISTS:
        return actual is not None
    return actual == expected


class StoredEvent(NamedTuple):
    """An event found in the store by id, as ``match_duplicate`` compares it."""

    event: PreparedEvent
    stream: StreamId
    sequence: int
    position: Position
    recorded_at_us: int


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


class ReadPage(NamedTuple):
    """One page of the global order, as ``EventStore.read_page`` returns it."""

    #: The events after the requested position, in commit order.
    events: list[RecordedEvent]
    #: When not None: no event of the page's filter commits at or before this position other
    #: than ``events``, so a reader may continue from here instead of rescanning what it does
    #: not want (stores whose commit order is position order, filtered short pages only).
    scanned: Position | None


class EventStore(abc.ABC):
    """An append-only store of event streams with a global order; an async context manager."""

    url: str
    #: Whether the adapter commits read-model tables (``TableWrite``) with its units of work.
    supports_tables: ClassVar[bool] = False
    #: True when no event can commit at or before a position ``head()`` has returned (commit
    #: order is position order: memory, SQLite). Filtered readers then skip to the head
    #: instead of rescanning events they do not want.
    head_bounds_reads: ClassVar[bool] = False

    def __init__(
        self,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_append_events: int = DEFAULT_MAX_APPEND_EVENTS,
    ) -> None:
        self.max_payload_bytes = max_payload_bytes
        self.max_append_events = max_append_events
        self._state = "new"
        self._open_lock: asyncio.Lock | None = None
        self._change: asyncio.Event | None = None
        # called after each committed unit with its appends and how long the commit took
        self.write_observers: list[Callable[[list[AppendRequest], float], None]] = []
        #: Set by ``chronik.testing.faults`` only; adapters call it at each step when set.
        self.fault_hook: FaultHook | None = None
        self._health = HEALTHY

    # --- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> Self:
        """Open the store (create the schema if needed); idempotent."""
        if self._state == "open":
            return self
        if self._state == "closed":
            raise StoreClosed(f"{self!r} is closed")
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._state == "new":
                await self._open()
                self._state = "open"
        return self

    async def close(self) -> None:
        """Close the store; pending subscriptions end."""
        if self._state == "open":
            self._state = "closed"
            self._notify()
            await self._close()
        self._state = "closed"

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} {self._state}>"

    @property
    def closed(self) -> bool:
        """True once the store has been closed."""
        return self._state == "closed"

    @property
    def health(self) -> StoreHealth:
        """Whether the writer works (see StoreHealth); read-only, cheap, never raises.

        Not ok while the latest writes failed with StoreUnavailable (disk full, connection
        lost, lock timeouts ...) until the next successful write, and once the store is
        closed. The memory adapter is always ok while open.
        """
        if self._state == "closed":
            return StoreHealth(False, "the store is closed", None, 0)
        return self._health

    def _write_succeeded(self) -> None:
        """Adapters call this after a commit: health is ok again."""
        if not self._health.ok:
            self._health = HEALTHY

    def _write_failed(self, error: BaseException) -> None:
        """Adapters call this when a write fails for a reason of the store's own."""
        h = self._health
        self._health = StoreHealth(
            False,
            f"writes are failing: {error}",
            time.time() if h.ok else h.since,
            h.failures + 1,
        )

    async def _ready(self) -> None:
        if self._state != "open":
            await self.open()

    # --- writing ------------------------------------------------------------------------------

    async def append(
        self, stream: StreamId, events: Iterable[EventData], expected: Expected = ANY
    ) -> AppendResult:
        """Append events to one stream atomically if it is at ``expected``.

        Raises WrongExpectedVersion (nothing written) if it is not. Re-appending events whose ids
        are stored returns the original result; the same id with other content raises
        DuplicateEventError.
        """
        request = self.prepare(stream, events, expected)
        if self._state != "open":
            await self.open()
        return (await self._commit(WriteUnit([request], [], [])))[0]

    async def append_prepared(self, request: AppendRequest) -> AppendResult:
        """Append a request made by ``prepare`` (callers that need the encoded events)."""
        if self._state != "open":
            await self.open()
        return (await self._commit(WriteUnit([request], [], [])))[0]

    async def _commit(self, unit: WriteUnit) -> list[AppendResult]:
        """``_write``, timed for the write observers."""
        if not self.write_observers:
            return await self._write(unit)
        start = time.perf_counter()
        results = await self._write(unit)
        elapsed = time.perf_counter() - start
        for observe in self.write_observers:
            try:
                observe(unit.appends, elapsed)
            except Exception:  # the unit is committed: an observer cannot undo or fail it
                _log.exception("write observer %r failed", observe)
        return results

    def transaction(self) -> UnitOfWork:
        """A unit of work: appends to several streams, committed all or nothing."""
        return UnitOfWork(self)

    def prepare(
        self, stream: StreamId, events: Iterable[EventData], expected: Expected
    ) -> AppendRequest:
        """Validate and encode one append; raises a ValidationError subclass on bad input."""
        if not isinstance(stream, StreamId):
            raise ValidationError(f"stream must be a StreamId, got {stream!r}", field="stream")
        if not isinstance(expected, ExpectedState) and (type(expected) is not int or expected < 0):
            raise InvalidExpectedVersion(
                f"expected must be ANY, NO_STREAM, STREAM_EXISTS or a sequence >= 0, "
                f"got {expected!r}",
                field="expected",
            )
        if isinstance(events, EventData):
            raise ValidationError("events must be a list of EventData", field="events")
        prepared = [self._prepare_event(e) for e in events]
        if not prepared:
            raise ValidationError("an append needs at least one event", field="events")
        if len(prepared) > self.max_append_events:
            raise TooManyEvents(len(prepared), self.max_append_events)
        if len(prepared) > 1 and len({p.event_id for p in prepared}) != len(prepared):
            raise ValidationError("the same event id appears twice in one append", field="events")
        return AppendRequest(stream, prepared, expected)

    def _prepare_event(self, event: EventData) -> PreparedEvent:
        if type(event) is not EventData:
            raise ValidationError(f"expected EventData, got {event!r}", field="events")
        etype = event.type
        if not isinstance(etype, str) or not _TYPE_RE.fullmatch(etype):
            raise InvalidEventType(
                f"invalid event type {etype!r}: expected [A-Za-z][A-Za-z0-9_.:-]{{0,127}}",
                field="type",
            )
        version = event.schema_version
        if type(version) is not int or not 1 <= version <= 1_000_000:
            raise ValidationError(
                f"schema_version must be an int >= 1, got {version!r}", field="schema_version"
            )
        event_id = event.event_id
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 64:
            raise ValidationError(f"invalid event id {event_id!r}", field="event_id")
        content_type = event.content_type
        payload = event.payload
        if isinstance(payload, bytes | bytearray | memoryview):
            data = bytes(payload)
            if len(data) > self.max_payload_bytes:  # before any parsing
                raise PayloadTooLarge(len(data), self.max_payload_bytes)
            if content_type == JSON:
                decode_json(data, "payload")  # the value rule of chronik.codec
            elif not isinstance(content_type, str) or not _CONTENT_TYPE_RE.fullmatch(content_type):
                raise ValidationError(
                    f"invalid content type {content_type!r}", field="content_type"
                )
        else:
            if content_type != JSON:
                raise ValidationError(
                    "content_type applies to bytes payloads only", field="content_type"
                )
            data = encode_json(payload, "payload")  # the value rule of chronik.codec
            if len(data) > self.max_payload_bytes:
                raise PayloadTooLarge(len(data), self.max_payload_bytes)
        md = event.metadata
        if md is None or (isinstance(md, Metadata) and not md):
            meta = None
        else:
            fields = Metadata.of(md).to_dict()
            check_json_value(fields, "metadata")
            meta = _metadata_encoder.encode(fields) if fields else None
        return PreparedEvent(event_id, etype, version, data, meta, content_type)

    # --- reading ------------------------------------------------------------------------------

    async def stream_version(self, stream: StreamId) -> int | None:
        """The last sequence of ``stream``, or None when it has no events."""
        await self._ready()
        return await self._stream_version(stream)

    async def head(self) -> Position | None:
        """The position of the last committed event, or None when the store is empty."""
        await self._ready()
        return await self._head()

    async def read_stream(
        self,
        stream: StreamId,
        from_sequence: int | None = None,
        backward: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """The events of one stream from ``from_sequence`` (inclusive) in either direction.

        ``from_sequence=None`` starts at the beginning (forward) or the end (backward).
        """
        _check_limit(limit)
        if from_sequence is not None and (type(from_sequence) is not int or from_sequence < 0):
            raise ValidationError(f"invalid from_sequence {from_sequence!r}", field="from")
        await self._ready()
        remaining = limit
        cursor = from_sequence
        while remaining is None or remaining > 0:
            size = READ_PAGE if remaining is None else min(READ_PAGE, remaining)
            page = await self._read_stream_page(stream, cursor, backward, size)
            for event in page:
                yield event
            if len(page) < size:
                return
            if remaining is not None:
                remaining -= len(page)
            cursor = page[-1].sequence + (-1 if backward else 1)
            if cursor < 0:
                return

    async def read_all(
        self,
        after: Position | None = None,
        domains: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        limit: int | None = None,
        backward: bool = False,
        before: Position | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """All events in commit order (newest first with ``backward=True``).

        Only events strictly after ``after`` and strictly before ``before`` are read; pass the last
        position you saw as ``after`` (forward) or ``before`` (backward) to page on.
        """
        _check_limit(limit)
        domains_t, types_t = _check_filters(domains, types)
        await self._ready()
        remaining = limit
        while remaining is None or remaining > 0:
            size = READ_PAGE if remaining is None else min(READ_PAGE, remaining)
            page = await self._read_all_page(after, before, domains_t, types_t, size, backward)
            for event in page:
                yield event
            if len(page) < size:
                return
            if remaining is not None:
                remaining -= len(page)
            if backward:
                before = page[-1].position
            else:
                after = page[-1].position

    def subscribe(
        self,
        after: Position | None = None,
        domains: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        *,
        batch_size: int = 500,
    ) -> Subscription:
        """Every event after ``after`` in commit order: catch up, then follow live appends."""
        from chronik.store.subscription import Subscription

        domains_t, types_t = _check_filters(domains, types)
        return Subscription(self, after, domains_t, types_t, batch_size)

    async def list_streams(
        self,
        domain: str | None = None,
        prefix: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[StreamInfo]:
        """Streams with their versions, oldest first; filter by domain and aggregate id prefix."""
        _check_limit(limit)
        await self._ready()
        remaining = limit
        cursor: int | None = None
        while remaining is None or remaining > 0:
            size = READ_PAGE if remaining is None else min(READ_PAGE, remaining)
            page, cursor = await self._list_streams_page(domain, prefix, cursor, size)
            for info in page:
                yield info
            if len(page) < size or cursor is None:
                return
            if remaining is not None:
                remaining -= len(page)

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        """The stored event with this id, or None."""
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 64:
            raise ValidationError(f"invalid event id {event_id!r}", field="event_id")
        await self._ready()
        return await self._get_event(event_id)

    async def read_table(
        self,
        table: str,
        where: Mapping[str, Any] | None = None,
        order_by: Sequence[str] = (),
        limit: int | None = None,
        *,
        after: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Committed rows of a read-model table that meet ``where``, as dicts.

        ``where`` maps columns to a value (equality; None matches NULL), a ``Range`` or an
        ``In`` (``chronik.store.tables``); every condition must hold, and all run in the
        database with bound values. ``order_by`` names columns (prefix one with ``-`` for
        descending); NULL sorts first ascending on every adapter. ``after`` (keyset paging)
        gives a value for each ``order_by`` column, typically those of the last row of the
        previous page: only rows that come after it in that order are returned (make the order
        unique, e.g. end it with the primary key). Raises ValidationError naming the column for
        a bad condition, ReadModelError if the table or a column does not exist.
        """
        check_identifier(table)
        conds = check_where(where)
        order = tuple(
            (check_identifier(c.removeprefix("-"), "column"), c.startswith("-")) for c in order_by
        )
        keyset = check_after(order, after)
        _check_limit(limit)
        self._require_tables()
        await self._ready()
        return await self._read_table(table, conds, order, limit, keyset)

    def _require_tables(self) -> None:
        if not self.supports_tables:
            raise ConfigurationError(
                f"{type(self).__name__} does not support read-model tables yet"
            )

    async def _read_table(
        self,
        table: str,
        where: tuple[Condition, ...],
        order_by: tuple[tuple[str, bool], ...],
        limit: int | None,
        after: tuple[Any, ...] | None,
    ) -> list[dict[str, Any]]:
        raise NotImplementedError  # adapters with supports_tables implement it

    # --- snapshots and checkpoints ------------------------------------------------------------

    async def load_snapshot(self, stream: StreamId) -> Snapshot | None:
        """The latest snapshot of ``stream``, or None."""
        if not isinstance(stream, StreamId):
            raise ValidationError(f"expected a StreamId, got {stream!r}", field="stream")
        await self._ready()
        return await self._load_snapshot(stream)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot; one with a lower sequence than the stored one is ignored."""
        unit = WriteUnit([], [], [self.check_snapshot(snapshot)])
        await self._ready()
        await self._write(unit)

    async def load_checkpoint(self, name: str, partition: int = 0) -> Checkpoint | None:
        """The stored checkpoint of processor ``name`` (one partition of it), or None."""
        _check_checkpoint_key(name, partition)
        await self._ready()
        return await self._load_checkpoint(name, partition)

    async def save_checkpoint(
        self, name: str, position: Position, partition: int = 0, epoch: int = 0
    ) -> None:
        """Store a checkpoint on its own; CheckpointFenced if a newer epoch holds it."""
        async with self.transaction() as tx:
            tx.save_checkpoint(name, position, partition, epoch)

    def check_snapshot(self, snapshot: Snapshot) -> Snapshot:
        """Validate a snapshot (raises ValidationError) and stamp it with the time."""
        if not isinstance(snapshot, Snapshot) or not isinstance(snapshot.stream, StreamId):
            raise ValidationError(f"expected a Snapshot, got {snapshot!r}", field="snapshot")
        if type(snapshot.sequence) is not int or snapshot.sequence < 0:
            raise ValidationError(f"invalid snapshot sequence {snapshot.sequence!r}")
        if not isinstance(snapshot.type, str) or not _TYPE_RE.fullmatch(snapshot.type):
            raise InvalidEventType(f"invalid snapshot type {snapshot.type!r}", field="type")
        if type(snapshot.schema_version) is not int or snapshot.schema_version < 1:
            raise ValidationError(
                f"invalid snapshot schema_version {snapshot.schema_version!r}",
                field="schema_version",
            )
        if not isinstance(snapshot.state, bytes):
            raise ValidationError("snapshot state must be bytes", field="state")
        if len(snapshot.state) > DEFAULT_MAX_SNAPSHOT_BYTES:
            raise PayloadTooLarge(len(snapshot.state), DEFAULT_MAX_SNAPSHOT_BYTES)
        return msgspec.structs.replace(snapshot, taken_at_us=time.time_ns() // 1000)

    # --- change notification (for subscriptions) ----------------------------------------------

    def change_signal(self) -> asyncio.Event:
        """An event that is set at the next commit; take it before reading, then wait on it."""
        if self._change is None:
            self._change = asyncio.Event()
        return self._change

    def wake_readers(self) -> None:
        """Set the current change signal now (a reader that closes wakes its own wait)."""
        self._notify()

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Hold while waiting on ``change_signal()``.

        Adapters that must poll to see other processes' commits poll only while someone watches.
        """
        self._watch(1)
        try:
            yield
        finally:
            self._watch(-1)

    async def read_page(
        self,
        after: Position | None,
        limit: int,
        domains: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
    ) -> ReadPage:
        """Up to ``limit`` events after ``after`` in commit order, for readers that keep their place.

        On stores where commit order is position order, a filtered page that comes back short
        also says up to where nothing else of the filter exists (``ReadPage.scanned``).
        """
        domains_t, types_t = _check_filters(domains, types)
        await self._ready()
        sparse = domains_t is not None or types_t is not None
        head = await self._head() if sparse and self.head_bounds_reads else None
        page = await self._read_all_page(after, None, domains_t, types_t, limit, False)
        scanned = head if head is not None and len(page) < limit else None
        return ReadPage(page, scanned)

    async def settled(self, after: Position | None) -> bool:
        """Whether no committed event after ``after`` is held back by a running transaction.

        Stores that commit in position order (memory, SQLite) are always settled.
        """
        await self._ready()
        return await self._settled(after)

    def _notify(self) -> None:
        change = self._change
        if change is not None:
            self._change = None
            change.set()

    def _watch(self, delta: int) -> None:  # noqa: B027 - optional hook
        """A reader starts (+1) or stops (-1) waiting for changes; adapters may poll."""

    async def _settled(self, after: Position | None) -> bool:
        """Adapters whose transactions commit out of position order override this."""
        return True

    # --- what adapters implement --------------------------------------------------------------

    @abc.abstractmethod
    async def _open(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    async def _write(self, unit: WriteUnit) -> list[AppendResult]:
        """Commit the unit (all or nothing), notify subscribers; one result per append.

        Checkpoints are written only if no stored epoch of the same (name, partition) is newer
        (else CheckpointFenced); a snapshot replaces the stored one of its stream unless that
        one has a higher sequence.
        """

    @abc.abstractmethod
    async def _get_event(self, event_id: str) -> RecordedEvent | None: ...

    @abc.abstractmethod
    async def _load_snapshot(self, stream: StreamId) -> Snapshot | None: ...

    @abc.abstractmethod
    async def _load_checkpoint(self, name: str, partition: int) -> Checkpoint | None: ...

    @abc.abstractmethod
    async def _stream_version(self, stream: StreamId) -> int | None: ...

    @abc.abstractmethod
    async def _head(self) -> Position | None: ...

    @abc.abstractmethod
    async def _read_stream_page(
        self, stream: StreamId, from_sequence: int | None, backward: bool, limit: int
    ) -> list[RecordedEvent]: ...

    @abc.abstractmethod
    async def _read_all_page(
        self,
        after: Position | None,
        before: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        limit: int,
        backward: bool,
    ) -> list[RecordedEvent]: ...

    @abc.abstractmethod
    async def _list_streams_page(
        self, domain: str | None, prefix: str | None, cursor: int | None, limit: int
    ) -> tuple[list[StreamInfo], int | None]: ...


class UnitOfWork:
    """Appends to several streams committed as one transaction; use with ``async with``."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._requests: list[AppendRequest] = []
        self._checkpoints: list[Checkpoint] = []
        self._snapshots: list[Snapshot] = []
        self._tables: list[TableWrite] = []
        self._event_ids: set[str] = set()
        self._results: list[AppendResult] | None = None

    def append(
        self, stream: StreamId, events: Iterable[EventData], expected: Expected = ANY
    ) -> None:
        """Add an append to the unit (validated now, written at commit)."""
        self.append_prepared(self._store.prepare(stream, events, expected))

    def append_prepared(self, request: AppendRequest) -> None:
        """Add an append made by ``EventStore.prepare``."""
        if self._results is not None:
            raise ValidationError("this unit of work is already committed")
        ids = {e.event_id for e in request.events}
        if not ids.isdisjoint(self._event_ids):
            raise ValidationError("the same event id appears twice in one unit of work")
        self._event_ids |= ids
        self._requests.append(request)

    def save_checkpoint(
        self, name: str, position: Position, partition: int = 0, epoch: int = 0
    ) -> None:
        """Commit a processor's checkpoint with the unit (fenced by ``epoch``)."""
        if self._results is not None:
            raise ValidationError("this unit of work is already committed")
        _check_checkpoint_key(name, partition)
        if not isinstance(position, Position):
            raise ValidationError(f"expected a Position, got {position!r}", field="position")
        if type(epoch) is not int or epoch < 0:
            raise ValidationError(f"invalid epoch {epoch!r}", field="epoch")
        self._checkpoints.append(Checkpoint(name, partition, position, epoch))

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Commit a snapshot with the unit."""
        if self._results is not None:
            raise ValidationError("this unit of work is already committed")
        self._snapshots.append(self._store.check_snapshot(snapshot))

    def write_tables(self, writes: Iterable[TableWrite], *, checked: bool = False) -> None:
        """Commit read-model table writes with the unit (validated now, in order).

        ``checked=True`` is for writes whose identifiers were validated when they were made
        (``chronik.projections`` builds them from declared tables): they are not checked again.
        Values are always checked: one no adapter can store (an int outside int64, NaN, a str
        with NUL or a lone surrogate, an unsupported type) raises ReadModelError naming the
        table and column, before anything reaches the database.
        """
        if self._results is not None:
            raise ValidationError("this unit of work is already committed")
        self._store._require_tables()
        if checked:
            self._tables += [check_values(w) for w in writes]
        else:
            self._tables += [check_values(check_table_write(w)) for w in writes]

    @property
    def results(self) -> list[AppendResult]:
        """One AppendResult per append, in order; available after commit."""
        if self._results is None:
            raise ValidationError("the unit of work has not been committed")
        return self._results

    async def commit(self) -> list[AppendResult]:
        """Write the unit; raises WrongExpectedVersion naming the stream if any append fails."""
        if self._results is None:
            if self._requests or self._checkpoints or self._snapshots or self._tables:
                await self._store._ready()
                self._results = await self._store._commit(
                    WriteUnit(self._requests, self._checkpoints, self._snapshots, self._tables)
                )
            else:
                self._results = []
        return self._results

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.commit()


_CHECKPOINT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}")


def _check_checkpoint_key(name: str, partition: int) -> None:
    if not isinstance(name, str) or not _CHECKPOINT_NAME_RE.fullmatch(name):
        raise ValidationError(f"invalid processor name {name!r}", field="name")
    if type(partition) is not int or not 0 <= partition < 65536:
        raise ValidationError(f"invalid partition {partition!r}", field="partition")


def _check_limit(limit: int | None) -> None:
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValidationError(f"invalid limit {limit!r}", field="limit")


def _check_filters(
    domains: Sequence[str] | None, types: Sequence[str] | None
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    out: list[tuple[str, ...] | None] = []
    for name, values in (("domains", domains), ("types", types)):
        if values is None:
            out.append(None)
            continue
        if isinstance(values, str) or not all(isinstance(v, str) for v in values):
            raise ValidationError(f"{name} must be a list of strings", field=name)
        out.append(tuple(values))
    return out[0], out[1]
