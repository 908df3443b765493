"""The event store port: what every adapter provides, and the template methods they share.

Adapters implement a handful of primitives (``_write``, the page readers, ``_head`` ...); the
public methods here validate input once (``chronik.store.validation``), page through reads and
build subscriptions, so every adapter has the same semantics and the conformance suites in
``chronik.testing`` hold them to it. The records adapters receive and return live in
``chronik.store.records``, the unit of work in ``chronik.store.unit_of_work``, leases in
``chronik.store.leases``; every name importable from here before keeps being importable.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

from chronik.dcb import AppendCondition, Query
from chronik.errors import ConfigurationError, LeaseHeld, NotSupported, ValidationError
from chronik.messages import (
    ANY,
    AppendResult,
    Checkpoint,
    EventData,
    Expected,
    Position,
    Snapshot,
    StreamId,
)
from chronik.store import leases as _leases
from chronik.store.archive_ops import ArchiveOps
from chronik.store.committing import commit_checked
from chronik.store.deletion import prepare_delete
from chronik.store.leases import Lease
from chronik.store.read import READ_PAGE, StoreReader
from chronik.store.records import (
    DEFAULT_MAX_APPEND_EVENTS,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_SNAPSHOT_BYTES,
    HEALTHY,
    AppendRequest,
    ConditionCheck,
    FaultHook,
    LeaseOp,
    PreparedEvent,
    ReadPage,
    StoredEvent,
    StoreHealth,
    StreamCheck,
    StreamDelete,
    TableSpec,
    TableWrite,
    WriteUnit,
    cancelled_by_caller,
    check_expected,
    is_retry,
    match_duplicate,
    merge_tagged,
    unit_error,
)
from chronik.store.retention import RetentionOps
from chronik.store.rewrites import Rewrites
from chronik.store.stream_start import StreamStartOps
from chronik.store.tables import Condition, check_after, check_identifier, check_where
from chronik.store.unit_of_work import UnitOfWork
from chronik.store.validation import (
    check_checkpoint_key,
    check_filters,
    check_limit,
    check_query,
    check_snapshot,
    prepare_append,
    prepare_tagged,
)

__all__ = [
    "DEFAULT_MAX_APPEND_EVENTS",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_MAX_SNAPSHOT_BYTES",
    "HEALTHY",
    "READ_PAGE",
    "AppendRequest",
    "ConditionCheck",
    "EventStore",
    "FaultHook",
    "Lease",
    "LeaseOp",
    "PreparedEvent",
    "ReadPage",
    "StoreHealth",
    "StoredEvent",
    "StreamCheck",
    "TableSpec",
    "TableWrite",
    "UnitOfWork",
    "WriteUnit",
    "cancelled_by_caller",
    "check_expected",
    "check_identifier",
    "is_retry",
    "match_duplicate",
    "unit_error",
]

_new: Final = tuple.__new__  # a NamedTuple made without its Python __new__

if TYPE_CHECKING:
    from chronik.store.subscription import Subscription


class EventStore(StoreReader, Rewrites, RetentionOps, StreamStartOps, ArchiveOps):
    """An append-only store of event streams with a global order; an async context manager."""

    url: str
    #: Whether the adapter commits read-model tables (``TableWrite``) with its units of work.
    supports_tables: ClassVar[bool] = False
    #: Whether the adapter offers soft / hard deletes (``delete_stream``, chronik.store.deletion);
    #: without it they raise NotSupported.
    supports_deletion: ClassVar[bool] = False

    def __init__(
        self,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_append_events: int = DEFAULT_MAX_APPEND_EVENTS,
    ) -> None:
        super().__init__()
        self.max_payload_bytes = max_payload_bytes
        self.max_append_events = max_append_events
        # called after each committed unit with its appends and how long the commit took
        self.write_observers: list[Callable[[list[AppendRequest], float], None]] = []

    # --- writing ------------------------------------------------------------------------------

    async def append(
        self, stream: StreamId, events: Iterable[EventData], expected: Expected = ANY
    ) -> AppendResult:
        """Append events to one stream atomically if it is at ``expected``.

        Raises WrongExpectedVersion (nothing written) if it is not. Re-appending events whose ids
        are stored returns the original result; the same id with other content raises
        DuplicateEventError.
        """
        request = prepare_append(
            stream, events, expected, self.max_payload_bytes, self.max_append_events
        )
        if self._state != "open":
            await self.open()
        # WriteUnit([request], [], []) without the NamedTuple's Python __new__
        return (await self._commit(_new(WriteUnit, ([request], [], [], (), (), (), (), ()))))[0]

    async def append_tagged(
        self,
        events: Iterable[EventData],
        condition: AppendCondition | None = None,
        *,
        domain: str = "dcb",
        tenant: str = "",
    ) -> AppendResult:
        """Append tagged events atomically unless ``condition`` fails (DCB).

        Raises AppendConditionFailed (nothing written) when an event matching the condition's
        query is stored after its ``after`` position. Each event is stored as the only event
        of a stream of its own, ``(domain, event id)``, in the one global order. Re-appending
        the same events (same ids) after an unknown outcome returns the original result.
        The result's ``positions`` has one position per event; its ``stream`` is the first
        event's.
        """
        return await self.append_tagged_prepared(
            *self.prepare_tagged(events, condition, domain, tenant)
        )

    async def append_tagged_prepared(
        self, requests: list[AppendRequest], check: ConditionCheck | None
    ) -> AppendResult:
        """Append a tagged append made by ``prepare_tagged`` (callers that need the encoded
        events)."""
        if self._state != "open":
            await self.open()
        results = await self._commit(WriteUnit(requests, [], [], conditions=_one(check)))
        return merge_tagged(results)

    def prepare_tagged(
        self,
        events: Iterable[EventData],
        condition: AppendCondition | None,
        domain: str = "dcb",
        tenant: str = "",
    ) -> tuple[list[AppendRequest], ConditionCheck | None]:
        """Validate and encode a tagged append; raises a ValidationError subclass."""
        return prepare_tagged(
            events, condition, domain, tenant, self.max_payload_bytes, self.max_append_events
        )

    async def append_prepared(self, request: AppendRequest) -> AppendResult:
        """Append a request made by ``prepare`` (callers that need the encoded events)."""
        if self._state != "open":
            await self.open()
        return (await self._commit(WriteUnit([request], [], [])))[0]

    async def _commit(self, unit: WriteUnit) -> list[AppendResult]:
        """``_write``; a unit with DCB conditions or a store with write observers takes the
        full path (archive check, tenant scopes, timing: ``chronik.store.committing``)."""
        if unit.conditions or self.write_observers:
            return await commit_checked(self, unit)
        return await self._write(unit)

    async def delete_stream(
        self,
        stream: StreamId,
        expected: Expected = ANY,
        *,
        hard: bool = False,
        event_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> AppendResult:
        """Delete ``stream`` if it is at ``expected``: soft (it reads empty and may start
        again, its sequence numbers continuing) or ``hard`` (tombstoned for good).

        Appends a ``chronik.stream_deleted`` event to the stream in the same transaction
        (chronik.store.deletion) and returns its result; pass the same ``event_id`` to retry a
        delete after an unknown outcome. Raises WrongExpectedVersion (nothing written),
        StreamDeleted for a tombstoned stream, NotSupported on a store without deletion.
        """
        self._require_deletion()
        request = prepare_delete(stream, expected, hard, event_id, metadata, self.max_payload_bytes)
        if self._state != "open":
            await self.open()
        unit = WriteUnit([request], [], [], deletes=[StreamDelete(0, hard)])
        return (await self._commit(unit))[0]

    def _require_deletion(self) -> None:
        if not self.supports_deletion:
            raise NotSupported("stream deletion", type(self).__name__)

    def transaction(self) -> UnitOfWork:
        """A unit of work: appends to several streams, committed all or nothing."""
        return UnitOfWork(self)

    def prepare(
        self, stream: StreamId, events: Iterable[EventData], expected: Expected
    ) -> AppendRequest:
        """Validate and encode one append; raises a ValidationError subclass on bad input."""
        return prepare_append(
            stream, events, expected, self.max_payload_bytes, self.max_append_events
        )

    # --- reading (the rest: chronik.store.read) -----------------------------------------------

    def subscribe(
        self,
        after: Position | None = None,
        domains: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        *,
        batch_size: int = 500,
        query: Query | None = None,
        tenant: str | None = None,
    ) -> Subscription:
        """Every event after ``after`` in commit order: catch up, then follow live appends;
        ``query`` (a ``chronik.Query``) keeps only the events it matches, ``tenant`` only one
        tenant's (None: every tenant), besides the domain and type filters."""
        from chronik.store.subscription import Subscription

        domains_t, types_t = check_filters(domains, types)
        if query is not None:
            check_query(query)
        return Subscription(self, after, domains_t, types_t, batch_size, query, tenant)

    async def read_table(
        self,
        table: str,
        where: Mapping[str, Any] | None = None,
        order_by: Sequence[str] = (),
        limit: int | None = None,
        *,
        after: Mapping[str, Any] | None = None,
        tenant: str | None = None,
    ) -> list[dict[str, Any]]:
        """Committed rows of a read-model table that meet ``where``, as dicts.

        ``where`` maps columns to a value (equality; None matches NULL), a ``Range`` or an
        ``In`` (``chronik.store.tables``); every condition must hold, and all run in the
        database with bound values. ``order_by`` names columns (prefix one with ``-`` for
        descending); NULL sorts first ascending on every adapter. ``after`` (keyset paging)
        gives a value for each ``order_by`` column, typically those of the last row of the
        previous page: only rows that come after it in that order are returned (make the order
        unique, e.g. end it with the primary key). ``tenant``: the rows of one tenant of a
        ``per_tenant`` table. Raises ValidationError naming the column for a bad condition,
        ReadModelError if the table or a column does not exist."""
        check_identifier(table)
        conds = check_where(where if tenant is None else {**(where or {}), "tenant": tenant})
        order = tuple(
            (check_identifier(c.removeprefix("-"), "column"), c.startswith("-")) for c in order_by
        )
        keyset = check_after(order, after)
        check_limit(limit)
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
        check_checkpoint_key(name, partition)
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
        return check_snapshot(snapshot)

    # --- leases (chronik.store.leases) -------------------------------------------------------

    async def acquire_lease(
        self, name: str, owner: str, ttl: float, partition: int = 0, *, version: int = 0
    ) -> int:
        """Claim or renew a lease for ``ttl`` seconds by the database clock; its epoch.

        Raises LeaseHeld (nothing written) while another owner's lease is unexpired. The epoch
        grows by one each time the owner changes; write checkpoints with it to be fenced.
        """
        async with self.transaction() as tx:
            tx.acquire_lease(name, owner, ttl, partition, version=version)
        held = await _leases.holders(self, name, partition)
        if not held or held[0].owner != owner:  # taken over since: an expired ttl
            raise LeaseHeld(name, partition, owner)
        return held[0].epoch

    async def release_lease(self, name: str, owner: str, partition: int = 0) -> None:
        """Let ``owner``'s lease expire now (another owner's lease is left alone)."""
        async with self.transaction() as tx:
            tx.release_lease(name, owner, partition)

    async def read_leases(self, name: str | None = None) -> list[Lease]:
        """The stored leases (of ``name``), expired and released ones included."""
        return await _leases.holders(self, name)

    # --- what adapters implement --------------------------------------------------------------

    @abc.abstractmethod
    async def _write(self, unit: WriteUnit) -> list[AppendResult]:
        """Commit the unit (all or nothing), notify subscribers; one result per append.

        Checkpoints are written only if no stored epoch of the same (name, partition) is newer
        (else CheckpointFenced); a snapshot replaces the stored one of its stream unless that
        one has a higher sequence.
        """

    @abc.abstractmethod
    async def _load_snapshot(self, stream: StreamId) -> Snapshot | None: ...

    @abc.abstractmethod
    async def _load_checkpoint(self, name: str, partition: int) -> Checkpoint | None: ...


def _one(check: ConditionCheck | None) -> tuple[ConditionCheck, ...]:
    return () if check is None else (check,)
