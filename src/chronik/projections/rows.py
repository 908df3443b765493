"""The bookkeeping rows a processor commits with its batches: status and dead letters."""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Final

from chronik.messages import RecordedEvent
from chronik.projections.system import DEAD_LETTERS, STATUS, lag_events
from chronik.store.base import TableWrite

if TYPE_CHECKING:
    from chronik.projections.processor import ProjectionProcessor

__all__ = ["RateMeter", "dead_letter", "status"]

RATE_WINDOW: Final = 5.0  # seconds of history behind events/s


class RateMeter:
    """Events per second over the last few seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def __call__(self, processed: int) -> float:
        now = time.monotonic()
        samples = self._samples
        samples.append((now, processed))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW:
            samples.popleft()
        t0, n0 = samples[0]
        return (processed - n0) / (now - t0) if now > t0 else 0.0


def dead_letter(
    projection: str,
    generation: int,
    e: RecordedEvent,
    error: str | None,
    attempts: int,
    blocked: bool = False,
) -> TableWrite:
    """The dead-letter row of a parked event (``blocked``: it only waits behind a failed one)."""
    values = {
        "projection": projection,
        "event_id": e.event_id,
        "generation": generation,
        "position": e.position.commit,
        "position_index": e.position.index,
        "stream": str(e.stream),
        "sequence": e.sequence,
        "type": e.type,
        "error": error,
        "attempts": attempts,
        "blocked": int(blocked),
        "parked_at": time.time_ns() // 1000,
    }
    return TableWrite.upsert(DEAD_LETTERS.name, values, DEAD_LETTERS.primary_key)


def status(proc: ProjectionProcessor) -> TableWrite:
    """The status row of a processor as it stands."""
    active, building, head = proc.active, proc.building, proc.head
    position = active.position
    lag = lag_events(position, head)
    state = proc.state
    if building is not None and state == "running":
        state = "rebuilding"
    values = {
        "name": proc.key,
        "version": active.version,
        "generation": active.generation,
        "building": building.generation if building else None,
        "building_version": building.version if building else None,
        "state": state,
        "position": None if position is None else str(position),
        "build_position": str(building.position) if building and building.position else None,
        "head": None if head is None else str(head),
        "lag_events": lag,
        "lag_seconds": max(0.0, time.time() - proc.last_event_us / 1e6) if lag else 0.0,
        "events_per_s": proc.rate(proc.processed),
        "processed": proc.processed,
        "last_error": proc.last_error,
        "heartbeat": time.time_ns() // 1000,
        "owner": proc.owner,
    }
    return TableWrite.upsert(STATUS.name, values, ("name",))
