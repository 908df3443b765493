"""Closing the books: a stream's history up to a sequence replaced by one event the model makes.

``compact_aggregate`` folds the events 0..``upto`` of one aggregate with its ``DomainModel``
(an ``AggregateModel``, a ``Decider``), asks the model for the summary of that state (by
default the state's ``closing_event()`` method; pass ``summarize`` for a decider's plain state),
encodes it with the registry and hands it to ``store.compact_stream``: the summary takes the
place of the event at ``upto`` (same sequence, same position), the events before it are hidden
at once and removed by the scavenger, every later event keeps its sequence and position. The
model must apply the summary like any event (an ``@apply`` that sets the whole state), so loads
and projections that rebuild read it where the history was. The summary's event id is derived
from the stream and ``upto``, so running it again answers the stored event.

Imports chronik's core (codec, domain model, store port); never projections, server or CLI.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from chronik.codec import EventRegistry
from chronik.domain_model import DomainModel
from chronik.errors import ValidationError
from chronik.messages import RecordedEvent, StreamId
from chronik.store.base import EventStore

__all__ = ["compact_aggregate", "compaction_id"]

_NAMESPACE = uuid.UUID("5b6f3c8e-2f1d-4c55-9a7e-6b1f0c2d9e41")


def compaction_id(stream: StreamId, upto: int) -> str:
    """The event id of the summary of ``stream`` up to ``upto`` (the same on every retry)."""
    return str(
        uuid.uuid5(_NAMESPACE, f"{stream.tenant}/{stream.domain}/{stream.aggregate_id}#{upto}")
    )


def _closing_event(state: Any) -> object:
    closing = getattr(state, "closing_event", None)
    if not callable(closing):
        raise ValidationError(
            f"{type(state).__name__} has no closing_event() method: pass summarize=",
            field="summarize",
        )
    return closing()


async def compact_aggregate(
    store: EventStore,
    registry: EventRegistry,
    model: DomainModel,
    aggregate_id: str,
    upto: int,
    *,
    summarize: Callable[[Any], object] | None = None,
    tenant: str = "",
) -> RecordedEvent:
    """Replace the aggregate's events 0..``upto`` by the model's summary of their state; the
    summary as stored (chronik.store.retention: ``compact_stream``)."""
    stream = StreamId(model.domain, aggregate_id, tenant)
    if type(upto) is not int or upto < 0:
        raise ValidationError(f"invalid sequence {upto!r}", field="upto")
    event_id = compaction_id(stream, upto)
    done = await store.get_event(event_id)
    if done is not None and (done.stream, done.sequence) == (stream, upto):
        return done  # run before: its stored answer (the history it sums up may be gone)
    state = model.initial(aggregate_id)
    evolve = model.evolver()
    async for event in store.read_stream(stream, 0, limit=upto + 1):
        state = evolve(state, await registry.adecode(event))
    summary = (summarize or _closing_event)(state)
    data = registry.to_event_data(summary, event_id=event_id)
    return await store.compact_stream(stream, upto, data)
