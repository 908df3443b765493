"""What the admin pages show, read from the store: overview figures, correlation chains, views of
events, dead letters and projection statuses ready for the templates (no HTML here)."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from chronik.errors import ValidationError
from chronik.messages import Position, RecordedEvent, StreamId
from chronik.projections import DeadLetter, ProjectionStatus
from chronik.store.base import EventStore

if TYPE_CHECKING:
    from chronik.app import Chronik
    from chronik.projections import ProjectionRunner

__all__ = [
    "ChainLink",
    "EventView",
    "Meter",
    "Overview",
    "ProjectionView",
    "correlation_chain",
    "dead_letter_view",
    "event_view",
    "overview",
    "projection_view",
]

RATE_WINDOW: Final = 60.0  # seconds of history behind "events/s"
RATE_CAP: Final = 20_000  # events counted at most for the rate (then shown as "at least")
STREAM_CAP: Final = 10_000  # streams counted at most (then shown as "10000+")
STREAM_RECOUNT: Final = 10.0  # seconds between two counts of 1000+ streams
CHAIN_WINDOW: Final = 1_000  # events read on each side of an event to find its correlation chain
PAGE: Final = 500


def pretty(value: Any) -> str:
    """Indented JSON of a decoded payload or metadata mapping."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def ordinal(position: str | Position | None) -> int:
    """About how many events lie up to ``position``: the row id (SQLite, memory: ``commit``;
    PostgreSQL: ``index``, the second half of ``xid:id``)."""
    if position is None:
        return 0
    p = Position.parse(position) if isinstance(position, str) else position
    return p.index or p.commit


@dataclass
class EventView:
    """One event as the stream page shows it."""

    event_id: str
    stream: StreamId
    sequence: int
    type: str
    schema_version: int
    position: str
    recorded_at: str
    content_type: str
    payload: str
    metadata: str
    correlation_id: str | None
    causation_id: str | None


def event_view(e: RecordedEvent) -> EventView:
    """The view of an event: payload and metadata pretty-printed."""
    d = e.to_dict()
    meta = e.metadata
    return EventView(
        event_id=e.event_id,
        stream=e.stream,
        sequence=e.sequence,
        type=e.type,
        schema_version=e.schema_version,
        position=str(e.position),
        recorded_at=e.recorded_at.isoformat(timespec="milliseconds"),
        content_type=e.content_type,
        payload=pretty(d["payload"]),
        metadata=pretty(d["metadata"]),
        correlation_id=meta.correlation_id,
        causation_id=meta.causation_id,
    )


@dataclass
class Overview:
    """The figures of the overview page."""

    head: str | None
    events_total: int
    events_per_s: float
    rate_capped: bool
    streams: int
    streams_capped: bool
    projections: list[ProjectionView] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what /readyz lists: empty = healthy


def health_problems(app: Chronik, runner: ProjectionRunner | None) -> list[str]:
    """What the process's supervisors say is wrong (tasks, loop lag, store writer,
    projections), as /readyz lists it."""
    supervisors = [app.health]
    if runner is not None and runner.health is not app.health:
        supervisors.append(runner.health)
    return [p for i, h in enumerate(supervisors) for p in h.problems(None if i else app.store)]


class Meter:
    """What the overview remembers between refreshes: head samples (events/s without a scan
    once a minute is covered) and the last stream count (recounted when the head moved, at
    most every STREAM_RECOUNT seconds when there are many)."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()
        self.streams: tuple[str | None, int, bool, float] | None = None

    def rate(self, now: float, total: int) -> float | None:
        """Events/s over the last RATE_WINDOW seconds from the samples; None until they span
        one (or when the oldest usable sample is stale)."""
        s = self.samples
        if not s or now - s[-1][0] >= 1.0:
            s.append((now, total))
        while len(s) > 1 and now - s[1][0] >= RATE_WINDOW:
            s.popleft()
        t0, n0 = s[0]
        if not RATE_WINDOW <= now - t0 <= RATE_WINDOW + 10:
            return None
        return max(0, total - n0) / (now - t0)


async def _scan_rate(store: EventStore) -> tuple[float, bool]:
    """Events/s over the last minute by reading back (at most RATE_CAP events)."""
    cutoff_us = int((time.time() - RATE_WINDOW) * 1_000_000)
    recent = 0
    before: Position | None = None
    while recent < RATE_CAP:
        page = [e async for e in store.read_all(backward=True, limit=PAGE, before=before)]
        for e in page:
            if e.recorded_at_us < cutoff_us:
                return recent / RATE_WINDOW, False
            recent += 1
        if len(page) < PAGE:
            break
        before = page[-1].position
    return recent / RATE_WINDOW, recent >= RATE_CAP


async def _count_streams(store: EventStore, meter: Meter, head: str | None) -> tuple[int, bool]:
    now = time.monotonic()
    last = meter.streams
    if last is not None and (
        last[0] == head or (last[1] >= 1000 and now - last[3] < STREAM_RECOUNT)
    ):
        return last[1], last[2]
    streams = 0
    async for _ in store.list_streams(limit=STREAM_CAP):
        streams += 1
    meter.streams = (head, streams, streams >= STREAM_CAP, now)
    return streams, streams >= STREAM_CAP


async def overview(
    store: EventStore,
    statuses: list[ProjectionStatus],
    meter: Meter | None = None,
    problems: list[str] | None = None,
) -> Overview:
    """Events total (the head), events/s over the last minute, streams, projections with lag."""
    meter = meter or Meter()
    position = await store.head()
    head = None if position is None else str(position)
    total = ordinal(position)
    measured = meter.rate(time.monotonic(), total)
    rate, capped = (measured, False) if measured is not None else await _scan_rate(store)
    streams, streams_capped = await _count_streams(store, meter, head)
    return Overview(
        head=head,
        events_total=total,
        events_per_s=round(rate, 2),
        rate_capped=capped,
        streams=streams,
        streams_capped=streams_capped,
        projections=[projection_view(s) for s in statuses],
        problems=list(problems or ()),
    )


@dataclass
class ProjectionView:
    """A projection's status with its rebuild progress worked out."""

    status: ProjectionStatus
    progress: int | None  # percent of the rebuild done, None when not rebuilding
    built: int
    total: int


def projection_view(s: ProjectionStatus) -> ProjectionView:
    """The status plus how far a rebuild (a new generation building) has come."""
    if s.building is None:
        return ProjectionView(s, None, 0, 0)
    built, total = ordinal(s.build_position), ordinal(s.head)
    percent = 100 if total == 0 else min(100, built * 100 // total)
    return ProjectionView(s, percent, built, total)


@dataclass
class ChainLink:
    """An event of a correlation chain: its depth in the causation tree and what caused it."""

    event: EventView
    depth: int
    cause: str  # "" for the chain's roots
    cause_event: str | None  # the event id of the cause when it is in the chain
    current: bool


def _cause(e: RecordedEvent, ids: set[str]) -> tuple[str | None, str]:
    """The event of the chain that caused ``e``, directly or through a command a reaction or
    saga sent for it (chronik derives those command ids from the event id:
    ``reaction:event_id:index``, ``saga:instance:event_id:index``), and a label."""
    c = e.metadata.causation_id
    if not c:
        return None, ""
    if c in ids and c != e.event_id:
        return c, f"event {c}"
    parts = c.split(":")
    for part in parts[1:9]:
        if part in ids and part != e.event_id:
            return part, f"command {c} of {parts[0]}, from event {part}"
    return None, f"command {c}"


async def correlation_chain(store: EventStore, event_id: str) -> tuple[str | None, list[ChainLink]]:
    """The events sharing ``event_id``'s correlation id, as a causation tree (depth-first,
    in commit order), read within CHAIN_WINDOW events on either side of it."""
    if not event_id or len(event_id) > 64:
        raise ValidationError(f"invalid event id {event_id!r}", field="event_id")
    event = await store.get_event(event_id)
    if event is None:
        return None, []
    corr = event.metadata.correlation_id
    found = [event]
    if corr:
        older = [
            e
            async for e in store.read_all(backward=True, before=event.position, limit=CHAIN_WINDOW)
        ]
        newer = [e async for e in store.read_all(after=event.position, limit=CHAIN_WINDOW)]
        found = [e for e in [*reversed(older), event, *newer] if e.metadata.correlation_id == corr]
    ids = {e.event_id for e in found}
    causes = {e.event_id: _cause(e, ids) for e in found}
    children: dict[str | None, list[RecordedEvent]] = {}
    for e in found:
        children.setdefault(causes[e.event_id][0], []).append(e)
    out: list[ChainLink] = []
    seen: set[str] = set()

    def walk(parent: str | None, depth: int) -> None:
        for e in children.get(parent, []):
            if e.event_id in seen:
                continue
            seen.add(e.event_id)
            parent_id, label = causes[e.event_id]
            out.append(ChainLink(event_view(e), depth, label, parent_id, e.event_id == event_id))
            walk(e.event_id, depth + 1)

    walk(None, 0)
    for e in found:  # causation cycles (forged metadata): list what the walk could not reach
        if e.event_id not in seen:
            seen.add(e.event_id)
            label = causes[e.event_id][1]
            out.append(ChainLink(event_view(e), 0, label, None, e.event_id == event_id))
    return corr, out


@dataclass
class DeadLetterView:
    """A parked event with the event itself (when the store still has it)."""

    letter: DeadLetter
    stream: StreamId | None
    parked_at: str
    event: EventView | None


async def dead_letter_view(store: EventStore, letter: DeadLetter) -> DeadLetterView:
    """The letter, its stream parsed and its event loaded for inspection."""
    try:
        stream: StreamId | None = StreamId.parse(letter.stream)
    except ValidationError:
        stream = None
    event = await store.get_event(letter.event_id)
    parked = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter.parked_at))
    return DeadLetterView(letter, stream, parked, None if event is None else event_view(event))
