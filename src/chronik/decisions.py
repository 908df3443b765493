"""What a decision becomes: the business logic's events, on their way to the store and back.

The command bus calls these in order: ``typed`` checks each event the logic returned (a
registered class, or a raw ``EventData`` of a type not registered), ``event_data`` turns the
events into the ``EventData`` to append (the command's metadata, ids derived from the command
id), ``evolvable`` gives the events as the state evolves with them right after the command (as
a later load gives them), and ``recorded`` the ``RecordedEvent``s the append stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from chronik.codec import EventRegistry
from chronik.errors import HandlerError, SerializationError, UnknownEventType
from chronik.ids import event_id_for
from chronik.messages import (
    AppendResult,
    Command,
    EventData,
    Metadata,
    Position,
    RecordedEvent,
    StreamId,
)
from chronik.store.base import AppendRequest, EventStore, PreparedEvent, UnitOfWork

__all__ = ["event_data", "evolvable", "record_outbox", "recorded", "typed"]


def typed(registry: EventRegistry, event: Any) -> Any:
    """A registered event instance (an EventData's payload converted to its class), or a raw
    EventData of a type that is not registered (stored as it is, like store.append)."""
    if isinstance(event, EventData):
        if event.type not in registry:
            return event
        cls = registry.class_for(event.type)
        try:
            return msgspec.convert(event.payload, cls)
        except msgspec.ValidationError as exc:
            raise SerializationError(
                f"{event.type} payload does not fit {cls.__qualname__}: {exc}", field="payload"
            ) from None
    if isinstance(event, type) or event is None:
        raise UnknownEventType(repr(event))
    registry.name_of(event)
    return event


def event_data(
    registry: EventRegistry | None,
    events: list[Any],
    command: Command,
    command_id: str,
    metadata: Metadata,
    first_id: str | None = None,
) -> list[EventData]:
    """The EventData to append for ``events``: registered ones encoded by ``registry`` (None:
    the logic is untyped and returns EventData only), each with the command's metadata and
    the id derived from the command id and its index (``first_id``: that of index 0, if the
    caller derived it already)."""
    return [
        _raw_event_data(e, metadata, command, command_id, i)
        if registry is None or isinstance(e, EventData)
        else registry.to_event_data(
            e, metadata, first_id if i == 0 and first_id else event_id_for(command_id, i)
        )
        for i, e in enumerate(events)
    ]


def _raw_event_data(
    event: Any, metadata: Metadata, command: Command, command_id: str, index: int
) -> EventData:
    """An EventData from untyped business logic, with the command's metadata and derived id."""
    if not isinstance(event, EventData):
        error = TypeError(f"expected EventData, got {event!r}")
        raise HandlerError(command.domain, command.type, error)
    return EventData(
        event.type,
        event.payload,
        Metadata({**metadata, **Metadata.of(event.metadata)}),
        event_id_for(command_id, index),
        event.schema_version,
        event.content_type,
        event.tags,
    )


def evolvable(
    typed_events: bool,
    stream: StreamId,
    version: int | None,
    events: list[Any],
    prepared: list[PreparedEvent],
) -> list[Any]:
    """The events a typed model's state evolves with after its command: each typed event as
    it is, each raw EventData as the RecordedEvent a later load gives it (its position and
    record time are provisional until the append). Untyped models get ``events`` as they are."""
    if not typed_events or not any(isinstance(e, EventData) for e in events):
        return events  # typed events only (the common case): nothing to convert
    first = 0 if version is None else version + 1
    now = time.time_ns() // 1000
    return [
        RecordedEvent(
            p.event_id,
            stream,
            first + i,
            p.type,
            p.schema_version,
            p.payload,
            Position(0),
            now,
            p.metadata,
            p.content_type,
            p.tags,
        )
        if isinstance(e, EventData)
        else e
        for i, (e, p) in enumerate(zip(events, prepared, strict=True))
    ]


async def recorded(
    store: EventStore, request: AppendRequest, result: AppendResult
) -> list[RecordedEvent]:
    """The events an append stored (read back when the adapter did not report positions)."""
    events = request.events
    if len(result.positions) != len(events) or not result.recorded_at_us:
        got = store.read_stream(request.stream, result.first_sequence, limit=len(events))
        return [e async for e in got]
    return [
        RecordedEvent(
            p.event_id,
            request.stream,
            result.first_sequence + i,
            p.type,
            p.schema_version,
            p.payload,
            result.positions[i],
            result.recorded_at_us,
            p.metadata,
            p.content_type,
            p.tags,
        )
        for i, p in enumerate(events)
    ]


def record_outbox(
    tx: UnitOfWork,
    rules: Sequence[Callable[[Any, PreparedEvent, StreamId], Any]],
    decided: Iterable[tuple[Any, PreparedEvent, StreamId]],
) -> None:
    """Record in ``tx`` the messages the outbox rules make of each decided event (the event,
    its prepared form and its stream): a Message, a (Message, kind) pair, or None."""
    from chronik.outbox import record

    for event, prepared, stream in decided:
        for rule in rules:
            out = rule(event, prepared, stream)
            if out is not None:
                message, kind = out if isinstance(out, tuple) else (out, "publish")
                record(tx, message, kind, stream.tenant)
