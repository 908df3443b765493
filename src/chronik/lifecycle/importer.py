"""Import an export into a store: every event id, sequence, payload, metadata and tag kept, in
the file's order, idempotently.

Each batch of a few hundred events is one unit of work whose appends expect their streams at
exactly the sequence before their first event, so an event lands only where it stood in the
source. Re-running an import, or resuming one that was interrupted, appends nothing twice:
events already stored with the same content are skipped (and counted). An event the target
contradicts (its id stored with other content or elsewhere, its stream at another version)
is an ImportConflict naming its line, and nothing of its batch is written.

A deletion event (``chronik.stream_deleted``) is imported as the delete it records, in the
unit that writes it: a soft delete empties the stream in the target, a hard one tombstones it.
Retention lines (format version 2) set each stream's own rules after the events, its
truncation point included (a truncated or compacted stream reads from the same sequence).
A stream whose first events were scavenged in the source (its first event in a full export
has a sequence N > 0 and the target never held the stream) is started at N in the target
(``store.start_stream_at``: as if its events 0..N-1 had been scavenged there too), then its
events are appended as the source holds them; a re-run finds it started and skips what is
stored. An incremental export (``after``) cannot tell a scavenged start from events in an
earlier export, nor can a store without deletion start a stream above 0: such a stream is
refused with ImportConflict, as is one the target holds other events of. The events of a stream
tombstoned in the target that precede its tombstone cannot be read back: a re-run counts
them skipped without comparing their content.

What the port cannot carry: ``recorded_at``. Every adapter stamps an event with its own clock
when it commits, so imported events are recorded at the import's time; the source's time
stays in the export file. Positions are the target's own: the order is kept, the values are
not (see ``chronik.lifecycle.move``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec

from chronik.errors import (
    ConcurrencyError,
    DuplicateEventError,
    NotSupported,
    StreamDeleted,
    WrongExpectedVersion,
)
from chronik.lifecycle.export import Progress
from chronik.lifecycle.format import ImportConflict
from chronik.lifecycle.runs import Lines, Reader, Run
from chronik.messages import AppendResult, Position, RecordedEvent, StreamId
from chronik.store.base import AppendRequest, EventStore, PreparedEvent
from chronik.store.retention import Retention

__all__ = ["ImportReport", "import_events"]

_metadata_decoder: Final = msgspec.json.Decoder(dict[str, str])


@dataclass(slots=True)
class ImportReport:
    """What an import did.

    ``appended`` events were written, ``skipped`` ones were stored already with the same
    content (a re-run or a resumed import), ``streams`` is how many streams begin in the file
    (their event 0 is in it), ``retention`` how many streams' rules were set. ``complete`` is
    False when the file has no end line: the export was cut short, and what was imported is a
    prefix of the source's order (export again, then import the new file: what is stored
    already is skipped). ``source``, ``exported_at`` and
    ``head`` come from the file's header.
    """

    appended: int = 0
    skipped: int = 0
    streams: int = 0
    retention: int = 0
    complete: bool = False
    source: str = ""
    exported_at: str = ""
    head: str | None = None

    @property
    def events(self) -> int:
        """Every event of the file that was read: appended or skipped."""
        return self.appended + self.skipped


async def import_events(
    store: EventStore, lines: Lines, *, progress: Progress | None = None
) -> ImportReport:
    """Import the export in ``lines`` (an iterable or async iterable of its lines, bytes or
    str, e.g. a file opened in binary mode) into ``store``.

    Raises InvalidExport naming the first bad line (nothing of its batch written, every
    earlier batch committed), ImportConflict naming the line the target contradicts.
    ``progress`` is called with the count of events done after each batch.
    """
    await store.open()
    reader = Reader(store)
    report = ImportReport()
    async for batch in reader.batches(lines):
        # a full export holds each stream from its first stored event: one that begins past 0
        # was scavenged in the source (an incremental one may hold it in an earlier file)
        full = reader.header is not None and reader.header.after is None
        appended, skipped = await _write_batch(store, batch, full)
        report.appended += appended
        report.skipped += skipped
        report.retention += await _set_retention(store, reader.take_retention())
        if progress is not None:
            progress(report.appended + report.skipped)
    header = reader.header
    if header is not None:
        report.source, report.exported_at, report.head = (
            header.source,
            header.exported_at,
            header.head,
        )
    report.streams = reader.streams
    report.complete = reader.end_events is not None
    if progress is not None:
        progress(report.appended + report.skipped)
    return report


async def _set_retention(store: EventStore, rules: list[tuple[int, StreamId, Retention]]) -> int:
    """Set each stream's rules (a truncation point only moves forward: re-runs change nothing)."""
    for _number, stream, retention in rules:
        await store.set_retention(stream, retention)
    return len(rules)


async def _write_batch(store: EventStore, batch: list[Run], full: bool) -> tuple[int, int]:
    """Write one batch as one unit; (appended, skipped). ``full``: the file is a full export."""
    if not batch:
        return 0, 0
    head = await store.head()
    try:
        results = await _commit(store, [(run, 0) for run in batch])
    except (ConcurrencyError, DuplicateEventError, StreamDeleted):
        # Some of it is stored already (a re-run, a resumed import) or the target disagrees:
        # sort it out run by run, then write what is left.
        return await _resolve(store, batch, full)
    appended = 0
    for run, result in zip(batch, results, strict=True):
        appended += sum(1 for p in _positions(result, len(run.events)) if _new(p, head))
    return appended, sum(len(run.events) for run in batch) - appended


async def _commit(store: EventStore, runs: list[tuple[Run, int]]) -> list[AppendResult]:
    """The runs (each after its first ``skip`` events) as one unit, deletions as deletes."""
    if not runs:
        return []
    async with store.transaction() as tx:
        for run, skip in runs:
            if run.deletion is not None and skip == 0:
                tx.delete_prepared(run.request(), run.deletion)
            else:
                tx.append_prepared(run.request(skip))
    return tx.results


def _positions(result: AppendResult, count: int) -> tuple[Position, ...]:
    return result.positions if len(result.positions) == count else (result.position,) * count


def _new(position: Position, head: Position | None) -> bool:
    """Whether an event the unit answered with was written by it (not stored before)."""
    return head is None or position > head


async def _state(store: EventStore, stream: StreamId) -> tuple[int, int, bool]:
    """(last sequence stored, shown or not; the truncation point; tombstoned) of a stream."""
    dead = False
    try:
        version = await store.stream_version(stream)
    except StreamDeleted:
        version, dead = None, True
    before = 0
    if store.supports_deletion and (version is None or version > 0):
        before = (await store.get_retention(stream)).truncate_before or 0
    if version is None:  # empty, emptied by a soft delete, or tombstoned
        return before - 1, before, dead
    return version, before, dead


async def _resolve(store: EventStore, batch: list[Run], full: bool) -> tuple[int, int]:
    """Check each run against the target, skip what it holds, write the rest as one unit."""
    states: dict[StreamId, tuple[int, int, bool]] = {}
    todo: list[tuple[Run, int]] = []  # (run, events of it stored already)
    skipped = 0
    for run in batch:
        stream = run.stream
        last, before, dead = states.get(stream) or await _state(store, stream)
        if last < run.first - 1 and last < 0 and full and await _start(store, run):
            last, before = run.first - 1, run.first  # as the source: its start scavenged
        if last < run.first - 1:
            raise ImportConflict(
                run.lines[0],
                _missing(run, last),
                stream=str(stream),
                event_id=run.events[0].event_id,
            )
        stored = min(len(run.events), last - run.first + 1)
        if stored == 0 and run.first == before and last < before:
            run.fresh = True  # it reads empty after a delete: it starts again here
        if dead and stored < len(run.events):
            raise ImportConflict(
                run.lines[stored],
                f"stream {stream} is deleted for good (tombstoned) in the target at sequence "
                f"{before - 1}; this event has sequence {run.first + stored}",
                stream=str(stream),
                event_id=run.events[stored].event_id,
            )
        if stored and not dead:  # a tombstone's events cannot be read back: taken as stored
            hidden = max(0, min(stored, before - run.first))
            if hidden:
                await _check_hidden(store, run, hidden)
            if stored > hidden:
                await _check_stored(store, run, stored, hidden)
        skipped += stored
        if stored < len(run.events):
            todo.append((run, stored))
        if run.deletion is not None:
            before, dead = run.first + 1, run.deletion
        states[stream] = (max(last, run.last), before, dead)
    try:
        await _commit(store, todo)
    except DuplicateEventError as exc:
        raise ImportConflict(_line_of(todo, exc.event_id), str(exc), event_id=exc.event_id) from exc
    except WrongExpectedVersion as exc:
        run, stored = next(((r, s) for r, s in todo if r.stream == exc.stream), todo[0])
        raise ImportConflict(
            run.lines[stored],
            f"{exc} (another writer appended to it during the import)",
            stream=str(run.stream),
        ) from exc
    appended = sum(len(run.events) - stored for run, stored in todo)
    return appended, skipped


async def _start(store: EventStore, run: Run) -> bool:
    """Start the run's stream (never held in the target) at the run's first sequence, as if
    the events before it had been scavenged; False when the store cannot (no deletion) or the
    stream held events (the caller refuses the run)."""
    try:
        await store.start_stream_at(run.stream, run.first)
    except (NotSupported, WrongExpectedVersion, StreamDeleted):
        return False
    return True


def _missing(run: Run, last: int) -> str:
    """Why a run cannot be appended: the events before it are not in the target."""
    shown = "has no events" if last < 0 else f"is at version {last}"
    text = (
        f"stream {run.stream} {shown} in the target, but this event has sequence "
        f"{run.first}: the events before it are missing"
    )
    if last < 0:
        return (
            f"{text} (they are in an earlier export: import it first; or they were scavenged "
            "in the source: only a full export into a store with deletion can start a "
            "stream past sequence 0)"
        )
    return f"{text} (import the earlier export first)"


async def _check_hidden(store: EventStore, run: Run, count: int) -> None:
    """ImportConflict unless the first ``count`` events of the run, hidden in the target (below
    its truncation point: they cannot be read), are stored as they are: appended again as a
    retry, which the store answers with the stored events or refuses."""
    request = AppendRequest(run.stream, run.events[:count], run.first - 1)
    try:
        async with store.transaction() as tx:
            tx.append_prepared(request)
    except DuplicateEventError as exc:
        number = _line_of([(run, 0)], exc.event_id)
        raise ImportConflict(
            number, str(exc), stream=str(run.stream), event_id=exc.event_id
        ) from exc
    except WrongExpectedVersion as exc:
        raise ImportConflict(
            run.lines[0],
            f"stream {run.stream} already holds other events at sequences {run.first} to "
            f"{run.first + count - 1} (below its truncation point)",
            stream=str(run.stream),
            event_id=run.events[0].event_id,
        ) from exc


def _line_of(todo: list[tuple[Run, int]], event_id: str) -> int:
    """The line of an event of the batch (the batch's first line if it is not in it)."""
    for run, _ in todo:
        for prepared, number in zip(run.events, run.lines, strict=True):
            if prepared.event_id == event_id:
                return number
    return todo[0][0].lines[0]


async def _check_stored(store: EventStore, run: Run, count: int, skip: int = 0) -> None:
    """ImportConflict unless events ``skip`` to ``count`` of the run are stored as they are."""
    start = run.first + skip
    found = [e async for e in store.read_stream(run.stream, start, limit=count - skip)]
    pairs = zip(run.events[skip:count], run.lines[skip:count], found, strict=False)
    for prepared, number, stored in pairs:
        if stored.event_id != prepared.event_id:
            raise ImportConflict(
                number,
                f"stream {run.stream} already holds another event at sequence "
                f"{stored.sequence} (event {stored.event_id}, not {prepared.event_id})",
                stream=str(run.stream),
                event_id=prepared.event_id,
            )
        if not _same(prepared, stored):
            raise ImportConflict(
                number,
                f"event {prepared.event_id} is already stored with different content",
                stream=str(run.stream),
                event_id=prepared.event_id,
            )
    if len(found) < count - skip:  # the stream changed under us: let the next run find out
        raise ImportConflict(
            run.lines[skip + len(found)],
            f"stream {run.stream} changed during the import",
            stream=str(run.stream),
        )


def _same(prepared: PreparedEvent, stored: RecordedEvent) -> bool:
    """Whether a stored event has the content of the prepared one (as adapters compare)."""
    return (
        stored.type == prepared.type
        and stored.schema_version == prepared.schema_version
        and stored.payload == prepared.payload
        and stored.content_type == prepared.content_type
        and tuple(stored.tags) == prepared.tags
        and stored.metadata.to_dict() == _metadata(prepared)
    )


def _metadata(prepared: PreparedEvent) -> dict[str, str]:
    return _metadata_decoder.decode(prepared.metadata) if prepared.metadata else {}
