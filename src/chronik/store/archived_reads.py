"""Reads through the archive and the hot log in one position order (``store.attach_archive``).

The archiver seals a range in the archive before it drops it from the hot log, and the drop
records the store's archive floor in the same transaction (``chronik.store.archive_ops``). So:

* forward, a reader takes archived events while its cursor is below the archive's horizon, then
  hot events after it; after each hot page it reads the floor, and if the floor passed its
  cursor (a drop ran while it read) it throws the page away, brings the archive up to the
  floor (``refresh``) and reads those events from the archive instead: no gap, no duplicate;
* backward, it takes hot events down to where the hot log ends, then (archive brought up to
  the floor) archived events before the last one it yielded;
* a stream is read from the hot log; when a hot page starts later than the next sequence
  expected (or the hot log has none), the missing part comes from the archive (brought up to
  the floor first), then the hot log is read again from there: a stream that is all hot never
  touches the archive.

DCB append conditions also look in the archive (``check_archived_conditions``), so a claim whose
event was archived still fails.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from chronik.dcb import Query
from chronik.errors import AppendConditionFailed, ConfigurationError, StreamDeleted
from chronik.messages import JSON, Position, RecordedEvent, StreamId
from chronik.store.records import ConditionCheck, ReadPage

if TYPE_CHECKING:
    from chronik.archive.archive import Archive
    from chronik.store.base import EventStore

__all__ = [
    "check_archived_conditions",
    "get_event",
    "read_all",
    "read_page",
    "read_query",
    "read_query_payloads",
    "read_stream",
    "read_stream_payloads",
]

_PAGE: Final = 1000
_log = logging.getLogger("chronik.store.archive")

Reader = Callable[[Position | None, int], Awaitable[list[RecordedEvent]]]


def _archive(store: EventStore) -> Archive:
    archive = store.archive
    assert archive is not None  # the callers route here only with an archive attached
    return archive


async def cover(store: EventStore, floor: Position | None = None) -> Archive:
    """The store's archive, refreshed if the hot log was dropped beyond its horizon;
    ConfigurationError when even then it does not hold what the hot log dropped."""
    archive = _archive(store)
    if floor is None:
        floor = await store._archive_floor()
    if floor is not None and (archive.horizon is None or archive.horizon < floor):
        await archive.refresh()
        if archive.horizon is None or archive.horizon < floor:
            raise ConfigurationError(
                f"{store.url} dropped its events up to {floor} but the attached archive holds "
                f"them only up to {archive.horizon}: attach the archive the archiver writes"
            )
    return archive


async def _forward_page(
    store: EventStore,
    cursor: Position | None,
    before: Position | None,
    size: int,
    arch: Reader,
    hot: Reader,
) -> tuple[list[RecordedEvent], Position | None, bool]:
    """One page forward after ``cursor``: (events, where to go on from, whether it is the end)."""
    archive = _archive(store)
    while True:
        horizon = archive.horizon
        if horizon is not None and (cursor is None or cursor < horizon):
            page = await arch(cursor, size)
            if len(page) == size:
                return page, page[-1].position, False
            if before is not None and before <= horizon:
                return page, horizon, True
            return page, horizon, False  # nothing else archived: the hot log next
        page = await hot(cursor, size)
        floor = await store._archive_floor()
        if floor is not None and (cursor is None or floor > cursor):
            await cover(store, floor)  # dropped while we read: those events are archived
            continue
        return page, (page[-1].position if page else cursor), len(page) < size


async def _forward(
    store: EventStore,
    after: Position | None,
    before: Position | None,
    limit: int | None,
    arch: Reader,
    hot: Reader,
) -> AsyncIterator[RecordedEvent]:
    remaining, cursor = limit, after
    while remaining is None or remaining > 0:
        size = _PAGE if remaining is None else min(_PAGE, remaining)
        page, cursor, done = await _forward_page(store, cursor, before, size, arch, hot)
        for event in page:
            yield event
        if done:
            return
        if remaining is not None:
            remaining -= len(page)


async def _backward(
    store: EventStore,
    before: Position | None,
    limit: int | None,
    arch: Callable[[Position | None, int | None], AsyncIterator[RecordedEvent]],
    hot: Reader,
) -> AsyncIterator[RecordedEvent]:
    remaining, cursor = limit, before
    while remaining is None or remaining > 0:
        size = _PAGE if remaining is None else min(_PAGE, remaining)
        page = await hot(cursor, size)
        for event in page:
            yield event
        if page:
            cursor = page[-1].position
        if remaining is not None:
            remaining -= len(page)
        if len(page) < size:
            break
    if remaining is not None and remaining <= 0:
        return
    await cover(store)
    async for event in arch(cursor, remaining):
        yield event


def read_all(
    store: EventStore,
    after: Position | None,
    before: Position | None,
    domains: tuple[str, ...] | None,
    types: tuple[str, ...] | None,
    limit: int | None,
    backward: bool,
) -> AsyncIterator[RecordedEvent]:
    """``read_all`` through the archive and the hot log."""
    archive = _archive(store)
    if backward:

        async def hot_back(cursor: Position | None, size: int) -> list[RecordedEvent]:
            return await store._read_all_page(after, cursor, domains, types, size, True)

        def arch_back(cursor: Position | None, left: int | None) -> AsyncIterator[RecordedEvent]:
            return archive.read_all(after, cursor, True, left, domains, types)

        return _backward(store, before, limit, arch_back, hot_back)

    async def arch(cursor: Position | None, size: int) -> list[RecordedEvent]:
        return [e async for e in archive.read_all(cursor, before, False, size, domains, types)]

    async def hot(cursor: Position | None, size: int) -> list[RecordedEvent]:
        return await store._read_all_page(cursor, before, domains, types, size, False)

    return _forward(store, after, before, limit, arch, hot)


async def read_page(
    store: EventStore,
    after: Position | None,
    limit: int,
    domains: tuple[str, ...] | None,
    types: tuple[str, ...] | None,
) -> ReadPage:
    """``read_page`` (subscriptions, catch-up) through the archive and the hot log."""
    archive = _archive(store)

    async def arch(cursor: Position | None, size: int) -> list[RecordedEvent]:
        return [e async for e in archive.read_all(cursor, None, False, size, domains, types)]

    async def hot(cursor: Position | None, size: int) -> list[RecordedEvent]:
        return await store._read_all_page(cursor, None, domains, types, size, False)

    sparse = domains is not None or types is not None
    head = await store._head() if sparse and store.head_bounds_reads else None
    cursor = after
    while True:
        page, cursor, done = await _forward_page(store, cursor, None, limit, arch, hot)
        if page or done:
            break
    scanned = None
    if len(page) < limit:  # the hot log's end (bounded by the head), or the archive's
        scanned = head if done else cursor
    return ReadPage(page, scanned)


def read_query(
    store: EventStore, query: Query, after: Position | None, limit: int | None, backward: bool
) -> AsyncIterator[RecordedEvent]:
    """``read_query`` through the archive and the hot log."""
    archive = _archive(store)

    async def hot(cursor: Position | None, size: int) -> list[RecordedEvent]:
        return await store._read_query_page(query, cursor, size, backward)

    if backward:

        def arch_back(cursor: Position | None, left: int | None) -> AsyncIterator[RecordedEvent]:
            return archive.read_query(query, cursor, left, True)

        return _backward(store, after, limit, arch_back, hot)

    async def arch(cursor: Position | None, size: int) -> list[RecordedEvent]:
        return [e async for e in archive.read_query(query, cursor, size)]

    return _forward(store, after, None, limit, arch, hot)


async def read_query_payloads(
    store: EventStore, query: Query, after: Position | None, limit: int
) -> list[Any]:
    """``read_query_payloads`` through the archive and the hot log."""
    page = [e async for e in read_query(store, query, after, limit, False)]
    return [
        (
            e.type,
            e.schema_version if e.content_type == JSON else e.content_type,
            e.payload,
            e.position.commit,
            e.position.index,
        )
        for e in page
    ]


async def read_stream(
    store: EventStore,
    stream: StreamId,
    from_sequence: int | None,
    backward: bool,
    limit: int | None,
) -> AsyncIterator[RecordedEvent]:
    """``read_stream`` through the archive and the hot log (the truncation point applies to
    archived events too)."""
    archive = _archive(store)
    floor = (await store._get_retention(stream)).truncate_before or 0
    remaining, yielded = limit, False
    if backward:
        nxt = from_sequence
        while remaining is None or remaining > 0:
            size = _PAGE if remaining is None else min(_PAGE, remaining)
            page = await store._read_stream_page(stream, nxt, True, size)
            for event in page:
                yield event
            yielded = yielded or bool(page)
            if page:
                nxt = page[-1].sequence - 1
            if remaining is not None:
                remaining -= len(page)
            if len(page) < size or (nxt is not None and nxt < floor):
                break
        if (remaining is None or remaining > 0) and (nxt is None or nxt >= floor):
            await cover(store)
            async for event in archive.read_stream(stream, nxt, True, remaining):
                if event.sequence < floor:
                    break
                yielded = True
                yield event
    else:
        nxt = max(from_sequence or 0, floor)
        while remaining is None or remaining > 0:
            size = _PAGE if remaining is None else min(_PAGE, remaining)
            page = await store._read_stream_page(stream, nxt, False, size)
            if not page or page[0].sequence > nxt:  # what is missing may be archived
                upto = page[0].sequence if page else None
                archived_any = False
                async for event in (await cover(store)).read_stream(stream, nxt, False, remaining):
                    if upto is not None and event.sequence >= upto:
                        break
                    yield event
                    yielded, archived_any, nxt = True, True, event.sequence + 1
                    if remaining is not None:
                        remaining -= 1
                if archived_any:
                    continue  # the hot log again from there (a drop may have run meanwhile)
            for event in page:
                yield event
            yielded = yielded or bool(page)
            if remaining is not None:
                remaining -= len(page)
            if len(page) < size:
                break
            nxt = page[-1].sequence + 1
    if not yielded and from_sequence is None and await store._tombstoned(stream):
        raise StreamDeleted(stream)


async def read_stream_payloads(
    store: EventStore, stream: StreamId, from_sequence: int | None, limit: int
) -> list[Any]:
    """``read_stream_payloads``: the hot log's rows when they start where asked, else the
    events read through the archive."""
    rows = await store._read_stream_payloads(stream, from_sequence, limit)
    if rows and rows[0][0] == (from_sequence or 0):
        return rows
    return [
        (
            e.sequence,
            e.type,
            e.schema_version if e.content_type == JSON else e.content_type,
            e.payload,
        )
        async for e in read_stream(store, stream, from_sequence, False, limit)
    ]


async def get_event(store: EventStore, event_id: str) -> RecordedEvent | None:
    """``get_event``: the hot log's, else the archive's."""
    found = await store._get_event(event_id)
    if found is not None:
        return found
    archive = await cover(store)
    return await archive.get_event(event_id)


async def check_archived_conditions(
    store: EventStore, conditions: Sequence[ConditionCheck]
) -> None:
    """AppendConditionFailed when an archived event matches a condition (besides the events
    it guards: a retry); the hot log checks the rest in the unit's transaction."""
    archive = await cover(store)
    horizon = archive.horizon
    for cond in conditions:
        if horizon is None or (cond.after is not None and cond.after >= horizon):
            continue
        async for event in archive.read_query(cond.query, cond.after):
            if event.event_id in cond.event_ids:
                continue
            item = next(i for i, it in enumerate(cond.query.items) if it.matches(event))
            raise AppendConditionFailed(item, event.position, str(cond.query))
