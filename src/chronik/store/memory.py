"""The in-memory event store: the reference adapter (``memory://``), for tests and prototypes."""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from chronik.dcb import Query
from chronik.errors import (
    AppendConditionFailed,
    CheckpointFenced,
    ReadModelError,
    StreamDeleted,
    WrongExpectedVersion,
)
from chronik.messages import (
    AppendResult,
    Checkpoint,
    Position,
    RecordedEvent,
    Snapshot,
    StreamId,
    StreamInfo,
)
from chronik.store.base import EventStore
from chronik.store.commit_log import CommitLog
from chronik.store.memory_archive import MemoryArchive
from chronik.store.memory_retention import MemoryRetention
from chronik.store.memory_rewrite import MemoryRewrites
from chronik.store.memory_tables import (
    Tables,
    apply_lease,
    apply_table_write,
    check_leases,
    check_tables,
)
from chronik.store.records import (
    AppendRequest,
    ConditionCheck,
    PreparedEvent,
    StoredEvent,
    WriteUnit,
    check_expected,
    is_retry,
    match_duplicate,
    unit_error,
)
from chronik.store.system_tables import LEASES, SYSTEM_TABLES
from chronik.store.table_query import matches, sort_rows
from chronik.store.tables import Condition

__all__ = ["MemoryEventStore"]


class MemoryEventStore(MemoryRewrites, MemoryArchive, MemoryRetention, EventStore):
    """Keeps every event in lists; one process, lost on exit."""

    supports_tables = True
    native_tenant_conditions = True  # _first_match
    supports_deletion = True
    head_bounds_reads = True

    def __init__(self, url: str = "memory://", **options: int) -> None:
        super().__init__(**options)
        self.url = url
        self._events: list[RecordedEvent] = []
        self._streams: dict[StreamId, list[RecordedEvent]] = {}
        self._stream_order: list[StreamId] = []
        self._by_id: dict[str, tuple[PreparedEvent, RecordedEvent]] = {}
        self._by_tag: dict[str, list[int]] = {}  # tag -> indexes into _events, ascending
        self._snapshots: dict[StreamId, Snapshot] = {}
        self._checkpoints: dict[tuple[str, int], Checkpoint] = {}
        self._init_retention()  # deletes and retention: chronik.store.memory_retention
        # the system tables, as the other adapters' migrations make them
        self._tables: Tables = {spec.name: (spec, {}) for spec in SYSTEM_TABLES}
        self.commit_log = CommitLog()  # positions follow commit order: one write at a time

    async def _open(self) -> None: ...

    async def _close(self) -> None: ...

    async def _write(self, unit: WriteUnit) -> list[AppendResult]:
        # Everything that can fail (checks, fault-injection steps) runs before the first change;
        # applying then cannot fail, so a unit is written whole or not at all.
        try:
            plan, deletes = self._plan(unit)
        except BaseException as exc:
            error = unit_error(exc, f"writing to {self.url}")
            if error is exc:
                raise
            raise error from exc
        results = self._apply(unit, plan)
        self._apply_deletes(deletes)
        return results

    def _plan(
        self, unit: WriteUnit
    ) -> tuple[list[AppendResult | None], dict[StreamId, tuple[int, bool]]]:
        """Check the unit against the state (raises what the write must fail with)."""
        hook = self.fault_hook
        if hook is not None:
            hook("begin", unit)
            if unit.checkpoints:
                hook("checkpoint", unit)
        # Check every request against the state as earlier requests of the unit leave it.
        requests = unit.appends
        for cp in unit.checkpoints:
            stored = self._checkpoints.get((cp.name, cp.partition))
            if stored is not None and stored.epoch > cp.epoch:
                raise CheckpointFenced(cp.name, cp.partition, cp.epoch, stored.epoch)
        known = self._by_id.__contains__
        for check in unit.expects:
            if not is_retry(check.event_ids, known):
                actual = self._version(check.stream)
                if not check_expected(check.expected, actual):
                    raise WrongExpectedVersion(check.stream, check.expected, actual)
        for cond in unit.conditions:
            if not is_retry(cond.event_ids, known):
                self._check_condition(cond)
        # per stream as the unit leaves it: (last sequence stored, first one shown, tombstoned)
        states: dict[StreamId, tuple[int, int, bool]] = {}
        deleting = {d.append: d.hard for d in unit.deletes}
        deletes: dict[StreamId, tuple[int, bool]] = {}
        plan: list[AppendResult | None] = []
        for i, req in enumerate(requests):
            if hook is not None:
                hook("append", unit)
            last, before, dead = states.get(req.stream) or self._stream_state(req.stream)
            if dead:
                raise StreamDeleted(req.stream)
            dup = self._find_duplicate(req)
            if dup is not None:
                plan.append(dup)
                if i in deleting and dup.last_sequence == last:  # a retried delete: redo it
                    states[req.stream] = (last, last + 1, deleting[i])
                    deletes[req.stream] = (last + 1, deleting[i])
                continue
            actual = last if last >= before else None
            if not check_expected(req.expected, actual):
                raise WrongExpectedVersion(req.stream, req.expected, actual)
            last += len(req.events)
            if i in deleting:
                before, dead = last + 1, deleting[i]
                deletes[req.stream] = (before, dead)
            states[req.stream] = (last, before, dead)
            plan.append(None)
        if unit.tables or unit.leases:
            if hook is not None:
                hook("tables", unit)
            check_tables(self._tables, unit.tables)
            check_leases(self._tables[LEASES.name][1], unit.leases)
        if hook is not None:
            if unit.snapshots:
                hook("snapshot", unit)
            hook("commit", unit)
        return plan, deletes

    def _apply(self, unit: WriteUnit, plan: list[AppendResult | None]) -> list[AppendResult]:
        requests = unit.appends
        now = time.time_ns() // 1000
        results: list[AppendResult] = []
        for req, done in zip(requests, plan, strict=True):
            if done is not None:
                results.append(done)
                continue
            stream_events = self._streams.get(req.stream)
            if stream_events is None:
                stream_events = self._streams[req.stream] = []
                self._stream_order.append(req.stream)
            first = (
                stream_events[-1].sequence + 1
                if stream_events
                else self._emptied.get(req.stream, -1) + 1
            )
            for i, p in enumerate(req.events):
                rec = RecordedEvent(
                    p.event_id,
                    req.stream,
                    first + i,
                    p.type,
                    p.schema_version,
                    p.payload,
                    Position(self._last_position + 1),
                    now,
                    p.metadata,
                    p.content_type,
                    p.tags,
                )
                for tag in p.tags:
                    self._by_tag.setdefault(tag, []).append(len(self._events))
                self._events.append(rec)
                self._last_position += 1
                stream_events.append(rec)
                self._by_id[p.event_id] = (p, rec)
            added = stream_events[-len(req.events) :]
            results.append(
                AppendResult(
                    req.stream,
                    first,
                    first + len(req.events) - 1,
                    added[-1].position,
                    tuple(e.position for e in added),
                    now,
                )
            )
        for cp in unit.checkpoints:
            self._checkpoints[(cp.name, cp.partition)] = msgspec.structs.replace(
                cp, updated_at_us=now
            )
        for snap in unit.snapshots:
            old = self._snapshots.get(snap.stream)
            if old is None or old.sequence <= snap.sequence:
                self._snapshots[snap.stream] = snap
        for w in unit.tables:
            apply_table_write(self._tables, w)
        for op in unit.leases:
            apply_lease(self._tables[LEASES.name][1], op)
        if requests:
            if self.commit_log is not None:  # before the wake-up: waiters consult it
                self.commit_log.add(unit, results)
            self._notify(own_commit=True)
        return results

    async def _read_table(
        self,
        table: str,
        where: tuple[Condition, ...],
        order_by: tuple[tuple[str, bool], ...],
        limit: int | None,
        after: tuple[Any, ...] | None,
    ) -> list[dict[str, Any]]:
        if table not in self._tables:
            raise ReadModelError(f"no read-model table {table!r}")
        spec, rows = self._tables[table]
        names = {c for c, _ in spec.columns}
        for column in [c for c, _, _ in where] + [c for c, _ in order_by]:
            if column not in names:
                raise ReadModelError(f"table {table!r} has no column {column!r}")
        out = sort_rows(matches(rows.values(), where, order_by, after, table), order_by, table)
        return out if limit is None else out[:limit]

    async def _get_event(self, event_id: str) -> RecordedEvent | None:
        hit = self._by_id.get(event_id)
        return None if hit is None else hit[1]

    async def _load_snapshot(self, stream: StreamId) -> Snapshot | None:
        return self._snapshots.get(stream)

    async def _load_checkpoint(self, name: str, partition: int) -> Checkpoint | None:
        return self._checkpoints.get((name, partition))

    def _check_condition(self, cond: ConditionCheck) -> None:
        """AppendConditionFailed if an event matching the condition is stored after it."""
        found = self._first_match(cond.query, cond.after, cond.tenant)
        if found is not None:
            item, event = found
            raise AppendConditionFailed(item, event.position, str(cond.query))

    def _first_match(
        self, query: Query, after: Position | None, tenant: str | None = None
    ) -> tuple[int, RecordedEvent] | None:
        """The first event after ``after`` (of ``tenant``, when given) that ``query`` matches,
        with its item's index."""
        events = self._events
        start = 0 if after is None else bisect.bisect_right(events, after, key=_position)
        best: tuple[int, int] | None = None  # (index into _events, item)
        for n, item in enumerate(query.items):
            if item.tags:  # walk the rarest tag's index
                indexes = min((self._by_tag.get(t, []) for t in item.tags), key=len)
                candidates: Sequence[int] = indexes[bisect.bisect_left(indexes, start) :]
            else:
                candidates = range(start, len(events))
            for i in candidates:
                if best is not None and i >= best[0]:
                    break
                if item.matches(events[i]) and (
                    tenant is None or events[i].stream.tenant == tenant
                ):
                    best = (i, n)
                    break
        return None if best is None else (best[1], events[best[0]])

    async def _read_query_page(
        self, query: Query, cursor: Position | None, limit: int, backward: bool
    ) -> list[RecordedEvent]:
        return await self._read_query_tenant_page(query, None, cursor, limit, backward)

    async def _read_query_tenant_page(
        self, query: Query, tenant: str | None, cursor: Position | None, limit: int, backward: bool
    ) -> list[RecordedEvent]:
        events = self._events
        if backward:
            hi = (
                len(events) if cursor is None else bisect.bisect_left(events, cursor, key=_position)
            )
            found = sorted(self._matching(query, 0, hi), reverse=True)
        else:
            lo = 0 if cursor is None else bisect.bisect_right(events, cursor, key=_position)
            found = sorted(self._matching(query, lo, len(events)))
        kept = found if tenant is None else [i for i in found if events[i].stream.tenant == tenant]
        return [events[i] for i in kept[:limit]]

    def _matching(self, query: Query, lo: int, hi: int) -> set[int]:
        """Indexes in [lo, hi) of the events ``query`` matches."""
        out: set[int] = set()
        events = self._events
        for item in query.items:
            if item.tags:
                indexes = min((self._by_tag.get(t, []) for t in item.tags), key=len)
                candidates: Sequence[int] = indexes[
                    bisect.bisect_left(indexes, lo) : bisect.bisect_left(indexes, hi)
                ]
            else:
                candidates = range(lo, hi)
            out.update(i for i in candidates if i not in out and item.matches(events[i]))
        return out

    def _find_duplicate(self, req: AppendRequest) -> AppendResult | None:
        stored = []
        for p in req.events:
            hit = self._by_id.get(p.event_id)
            if hit is not None:
                old, rec = hit
                stored.append(
                    StoredEvent(old, rec.stream, rec.sequence, rec.position, rec.recorded_at_us)
                )
        return match_duplicate(req, stored) if stored else None

    async def _stream_version(self, stream: StreamId) -> int | None:
        return self._version(stream)

    async def _head(self) -> Position | None:
        return self._events[-1].position if self._events else None

    async def _read_stream_page(
        self, stream: StreamId, from_sequence: int | None, backward: bool, limit: int
    ) -> list[RecordedEvent]:
        events = self._streams.get(stream, [])
        # list index = sequence - offset (the scavenger may have removed a prefix)
        offset = events[0].sequence if events else 0
        floor = max(self._truncated.get(stream, 0) - offset, 0)
        if backward:
            start = (
                len(events) - 1
                if from_sequence is None
                else min(from_sequence - offset, len(events) - 1)
            )
            if start < 0:
                return []
            return [events[i] for i in range(start, max(start - limit, floor - 1, -1), -1)]
        start = max((from_sequence or 0) - offset, floor)
        return events[start : start + limit]

    async def _read_all_page(
        self,
        after: Position | None,
        before: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        limit: int,
        backward: bool,
    ) -> list[RecordedEvent]:
        events = self._events
        lo = 0 if after is None else bisect.bisect_right(events, after, key=_position)
        hi = len(events) if before is None else bisect.bisect_left(events, before, key=_position)
        indices = range(hi - 1, lo - 1, -1) if backward else range(lo, hi)
        out: list[RecordedEvent] = []
        for i in indices:
            e = events[i]
            if (domains is None or e.stream.domain in domains) and (
                types is None or e.type in types
            ):
                out.append(e)
                if len(out) == limit:
                    break
        return out

    async def _list_streams_page(
        self, domain: str | None, prefix: str | None, cursor: int | None, limit: int
    ) -> tuple[list[StreamInfo], int | None]:
        out: list[StreamInfo] = []
        start = 0 if cursor is None else cursor
        i = start
        for i in range(start, len(self._stream_order)):
            s = self._stream_order[i]
            if (domain is None or s.domain == domain) and (
                prefix is None or s.aggregate_id.startswith(prefix)
            ):
                out.append(StreamInfo(s, self._stream_state(s)[0]))
                if len(out) == limit:
                    return out, i + 1
        return out, None


def _position(event: RecordedEvent) -> Position:
    return event.position
