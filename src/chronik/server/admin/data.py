"""What the admin pages show, read from the store: overview figures, correlation chains, views of
events, dead letters and projection statuses ready for the templates (no HTML here)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

from chronik.errors import ValidationError
from chronik.messages import Position, RecordedEvent, StreamId
from chronik.projections import DeadLetter, ProjectionStatus
from chronik.store.base import EventStore

__all__ = [
    "ChainLink",
    "EventView",
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


async def overview(store: EventStore, statuses: list[ProjectionStatus]) -> Overview:
    """Events total (the head), events/s over the last minute, streams, projections with lag."""
    head = await store.head()
    now = time.time()
    cutoff_us = int((now - RATE_WINDOW) * 1_000_000)
    recent = 0
    before: Position | None = None
    done = head is None
    while not done and recent < RATE_CAP:
        page = [e async for e in store.read_all(backward=True, limit=PAGE, before=before)]
        for e in page:
            if e.recorded_at_us < cutoff_us:
                done = True
                break
            recent += 1
        if len(page) < PAGE:
            done = True
        elif page:
            before = page[-1].position
    streams = 0
    async for _ in store.list_streams(limit=STREAM_CAP):
        streams += 1
    return Overview(
        head=None if head is None else str(head),
        events_total=ordinal(head),
        events_per_s=round(recent / RATE_WINDOW, 2),
        rate_capped=recent >= RATE_CAP,
        streams=streams,
        streams_capped=streams >= STREAM_CAP,
        projections=[projection_view(s) for s in statuses],
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
    """The event of the chain that caused ``e`` (directly, or through a reaction's command,
    whose id is ``reaction:event_id:index`` - see chronik.reactions), and a label."""
    c = e.metadata.causation_id
    if not c:
        return None, ""
    if c in ids and c != e.event_id:
        return c, f"event {c}"
    parts = c.split(":")
    if len(parts) == 3 and parts[1] in ids and parts[1] != e.event_id:
        return parts[1], f"command {c} of {parts[0]}, from event {parts[1]}"
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
