"""Move a store's events into another store (SQLite -> PostgreSQL and back, any adapter pair).

The export's lines go straight into the import in one process (no file), then the target is
checked against the source: the source's events up to the head the export stopped at appear
in the target with the same ids, streams and sequences, in the same order. Positions are the
target's own: a position is a place in one store's log (a SQLite rowid, a PostgreSQL
(transaction id, row id) pair), so the values differ across stores while the order they give
is the source's. Checkpoints are positions, which is why they are not moved: reset or rebuild
projections on the target (they replay in the same order). Re-running a move that was
interrupted resumes it: what the target holds already is skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from chronik.lifecycle.export import PROGRESS_EVERY, ExportReport, Progress, export_lines
from chronik.lifecycle.importer import ImportReport, import_events
from chronik.messages import Position, RecordedEvent
from chronik.store.base import EventStore

__all__ = ["MoveReport", "move_store", "verify_move"]


@dataclass(slots=True)
class MoveReport:
    """What a move did: the export (events, the source head it stopped at), the import
    (appended, skipped) and the check. ``verified`` is None when the check was not run, else
    whether it passed; ``problem`` says what differs when it did not. ``target_events`` counts
    the target's whole log afterwards (more than ``exported.events`` if it held other events)."""

    exported: ExportReport
    imported: ImportReport
    verified: bool | None = None
    problem: str | None = None
    target_events: int = 0
    target_head: Position | None = None


async def move_store(
    source: EventStore,
    target: EventStore,
    *,
    after: Position | None = None,
    verify: bool = True,
    progress: Progress | None = None,
    verify_progress: Progress | None = None,
) -> MoveReport:
    """Copy every event of ``source`` (after ``after``) up to its head into ``target``, keeping
    ids, streams, sequences, payloads, metadata, tags and the order; then (``verify``) check.

    Raises what ``import_events`` raises (ImportConflict naming the export line of an event the
    target contradicts). ``progress`` gets the count of events moved, ``verify_progress`` the
    count checked.
    """
    exported: list[ExportReport] = []
    imported = await import_events(
        target, export_lines(source, after=after, report=exported), progress=progress
    )
    report = MoveReport(exported[0], imported)
    if verify:
        problem, count, head = await verify_move(
            source, target, exported[0], progress=verify_progress
        )
        report.verified, report.problem = problem is None, problem
        report.target_events, report.target_head = count, head
    return report


async def verify_move(
    source: EventStore,
    target: EventStore,
    exported: ExportReport,
    *,
    progress: Progress | None = None,
) -> tuple[str | None, int, Position | None]:
    """Whether the events of an export appear in ``target`` in the same order, with the same
    ids, streams and sequences: (what differs or None, events in the target, its head).

    Walks both logs once, side by side (memory stays flat): the source's events must be the
    target's log, or a subsequence of it when the target held other events already.
    """
    wanted = _source_events(source, exported)
    checked = 0
    total = 0
    head: Position | None = None
    want = await anext(wanted, None)
    async for event in target.read_all():
        total += 1
        head = event.position
        if want is None or event.event_id != want.event_id:
            continue
        if event.stream != want.stream or event.sequence != want.sequence:
            return (
                f"event {want.event_id} is {event.stream}#{event.sequence} in the target, "
                f"{want.stream}#{want.sequence} in the source",
                total,
                head,
            )
        checked += 1
        if progress is not None and checked % PROGRESS_EVERY == 0:
            progress(checked)
        want = await anext(wanted, None)
    if progress is not None:
        progress(checked)
    if want is not None:
        return (
            f"event {want.event_id} ({want.stream}#{want.sequence}, number {checked + 1} of "
            f"{exported.events}) is missing from the target or out of order",
            total,
            head,
        )
    if checked != exported.events:
        return f"{checked} events checked, {exported.events} exported", total, head
    return None, total, head


async def _source_events(
    source: EventStore, exported: ExportReport
) -> AsyncIterator[RecordedEvent]:
    """The source's events the export held, again, in order."""
    head = exported.head
    if head is None:
        return
    async for event in source.read_all(after=exported.after):
        if event.position > head:
            return
        yield event
