"""Replay marks: how far each projection handled events live, kept across rebuilds and resets.

``chronik_replay_marks`` holds, per (projection, partition, generation), the position of the
last event the projection handled live, staged with the handler's writes (committed in the
projection's own unit of work). It is not generation-scoped, so it survives a rebuild or reset:

- process managers (sagas, reactions, aggregate deadlines; see chronik.saga_record) treat an
  event at or before the highest mark as past: its handler runs again to rebuild state, but a
  command with no record for it is not sent;
- a projection declared with ``replay="refuse"`` (its handlers have effects outside chronik
  that cannot be repeated) writes its reason into its mark: once it has handled an event, a
  rebuild or a reset to the start or to an earlier position is refused with ``ReplayRefused``
  by ``ProjectionAdmin.request``, the one path of the CLI, the HTTP API and the admin UI, before
  anything is changed.
"""

from __future__ import annotations

from typing import Final

from chronik.errors import ReplayRefused
from chronik.messages import Position, RecordedEvent
from chronik.store.base import EventStore, TableWrite
from chronik.store.tables import REPLAY_MARKS

__all__ = ["MARKS", "check_replay", "mark_write", "past_mark"]

MARKS: Final = REPLAY_MARKS


async def past_mark(store: EventStore, projection: str, partition: int) -> Position | None:
    """The furthest position ``projection`` (its ``partition``) handled live, in any
    generation; None if it never handled an event since decisions are recorded."""
    rows = await store.read_table(MARKS.name, {"projection": projection, "partition": partition})
    marks = [Position.parse(r["position"]) for r in rows if r["position"]]
    return max(marks) if marks else None


def mark_write(
    projection: str, partition: int, generation: int, event: RecordedEvent, refuse: str | None
) -> TableWrite:
    """The write that moves a generation's mark to ``event`` (staged with its handler)."""
    values = {
        "projection": projection,
        "partition": partition,
        "generation": generation,
        "position": str(event.position),
        "refuse": refuse,
    }
    return TableWrite.upsert(MARKS.name, values, ("projection", "partition", "generation"))


async def check_replay(store: EventStore, projection: str, action: str, arg: str = "") -> None:
    """Raise ReplayRefused if ``action`` (rebuild or reset) would repeat side effects of a
    projection that declared ``replay="refuse"`` (a reset to a position past everything it
    handled is allowed: it repeats nothing)."""
    if action not in ("rebuild", "reset"):
        return
    base = projection.split("/")[0]
    rows = await store.read_table(MARKS.name, {"projection": base})
    refusing = [r for r in rows if r["refuse"]]
    if not refusing:
        return
    if action == "reset" and arg:
        handled = max(Position.parse(r["position"]) for r in refusing)
        if Position.parse(arg) >= handled:
            return
    raise ReplayRefused(base, action, refusing[0]["refuse"])
