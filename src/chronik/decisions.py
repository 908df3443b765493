"""What a decision becomes: the business logic's events, on their way to the store and back.

The command bus calls these in order: ``typed`` checks each event the logic returned (a
registered class, or a raw ``EventData`` of a type not registered), ``event_data`` turns the
events into the ``EventData`` to append (the command's metadata, ids derived from the command
id), ``evolvable`` gives the events as the state evolves with them right after the command (as
a later load gives them), and ``recorded`` the ``RecordedEvent``s the append stored.

``route`` checks a command first (a ``Routed`` command, its ids derived once); a ``Decision``
carries what the logic decided to the append. The common case takes a shorter way with the
same checks and bytes: ``Encodings.prepared`` encodes instances of registered classes straight
into the ``PreparedEvent``s that ``EventData`` + ``store.prepare`` would make, the metadata
encoded once per command (``command_metadata``, ``encoded_metadata``). ``earlier`` finds what
an earlier dispatch of a command id appended; ``logic_failed`` (``LogicErrors``) turns a failure
of the business logic into its HandlerError.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from chronik.codec import EventRegistry
from chronik.domain_model import DomainModel
from chronik.errors import (
    ChronikError,
    HandlerError,
    PayloadTooLarge,
    SerializationError,
    TooManyEvents,
    UnknownEventType,
    ValidationError,
)
from chronik.ids import event_id_for, new_event_id
from chronik.messages import (
    JSON,
    AppendResult,
    Command,
    EventData,
    Expected,
    Metadata,
    Position,
    RecordedEvent,
    StreamId,
)
from chronik.store.base import AppendRequest, EventStore, PreparedEvent
from chronik.values import check_json_value, encode_json

__all__ = [
    "MAX_COMMAND_ID",
    "Decision",
    "Encodings",
    "LogicErrors",
    "Routed",
    "command_metadata",
    "earlier",
    "encoded_metadata",
    "event_data",
    "evolvable",
    "logic_failed",
    "recorded",
    "recorded_now",
    "request",
    "route",
    "typed",
]

MAX_COMMAND_ID: Final = 128

_new: Final = tuple.__new__
_metadata_encoder: Final = msgspec.json.Encoder(order="sorted")  # as store.prepare: same bytes


class Routed(msgspec.Struct):
    """A checked command and what its dispatch needs: the model, stream, ids and metadata."""

    model: DomainModel
    command: Command  # its payload parsed
    stream: StreamId
    command_id: str
    known_id: bool  # the caller gave the id: an earlier dispatch of it may exist
    metadata: dict[str, str]  # of the events: correlation and causation set
    expected_sequence: int | None
    first: str  # the id of the first event the command appends (derived once; DCB: "")


class Decision(msgspec.Struct):
    """What the logic decided: its events, the append they make, the state after them."""

    events: list[Any]
    request: AppendRequest
    state: Any


def route(model: DomainModel, command: Command, stream: StreamId, dcb: bool) -> Routed:
    """``command`` (of ``stream``, checked) parsed by its domain's ``model``, with its ids
    (a new one when it has none) and its events' metadata; ValidationError if it is bad."""
    command = model.parse(command)
    expected = command.expected_sequence
    if expected is not None and (type(expected) is not int or expected < -1):
        raise ValidationError(f"invalid expected_sequence {expected!r}", field="expected_sequence")
    command_id = command.command_id
    known_id = command_id is not None
    if command_id is None:
        command_id = new_event_id()
    elif not isinstance(command_id, str) or not 0 < len(command_id) <= MAX_COMMAND_ID:
        raise ValidationError(f"invalid command id {command_id!r}", field="command_id")
    metadata = command_metadata(command, command_id)
    first = "" if dcb else event_id_for(command_id, 0)
    return Routed(model, command, stream, command_id, known_id, metadata, expected, first)


def command_metadata(command: Command, command_id: str) -> dict[str, str]:
    """The metadata of a command's events: the command's own (checked as ``Metadata.of``
    checks it) with correlation = its correlation id (the command id when it has none) and
    causation = the command id, as ``Metadata.of_command`` makes it."""
    fields = {} if command.metadata is None else Metadata.of(command.metadata).to_dict()
    fields["correlation_id"] = fields.get("correlation_id") or command_id
    fields["causation_id"] = command_id
    return fields


def encoded_metadata(fields: dict[str, str]) -> bytes:
    """The bytes ``store.prepare`` stores for the metadata ``fields`` (strings only), checked
    by the value rule as it checks them."""
    try:
        data = _metadata_encoder.encode(fields)
        if data.isascii():  # ASCII text only: nothing the rule refuses
            return data
    except UnicodeEncodeError:  # a lone surrogate: the rule names it
        pass
    check_json_value(fields, "metadata")
    return _metadata_encoder.encode(fields)


class Encodings:
    """The registry's current (name, schema version) of each registered class, for
    ``prepared``; rebuilt whenever the registry changes."""

    def __init__(self, registry: EventRegistry) -> None:
        self.registry = registry
        self._source: object = None  # the registry's decoders the table was made with
        self._table: dict[type[Any], tuple[str, int]] = {}

    def prepared(
        self, r: Routed, events: list[Any], store: EventStore
    ) -> list[PreparedEvent] | None:
        """The ``events`` the logic decided for ``r`` as the PreparedEvents ``store.prepare``
        makes of their EventData (the same checks, the same bytes, ids derived from the
        command id); None when one is not an instance of a registered class or payloads are
        sealed (personal data): the caller takes the general way (``request``)."""
        registry = self.registry
        if registry.keys is not None or registry.at_rest is not None:
            return None
        source = registry.current_decoders()
        if source is not self._source:
            self._table = {
                registry.class_for(name): (name, version)
                for name, (version, _) in source.items()
                if registry.canonical(name) == name
            }
            self._source = source
        table, limit = self._table, store.max_payload_bytes
        metadata = encoded_metadata(r.metadata)
        out = []
        for i, event in enumerate(events):
            found = table.get(type(event))
            if found is None:
                return None
            payload = encode_json(event, "payload")
            if len(payload) > limit:
                raise PayloadTooLarge(len(payload), limit)
            event_id = r.first if i == 0 else event_id_for(r.command_id, i)
            # PreparedEvent(...) without the NamedTuple's Python __new__ (every field given)
            out.append(
                _new(PreparedEvent, (event_id, found[0], found[1], payload, metadata, JSON, ()))
            )
        if len(out) > store.max_append_events:
            raise TooManyEvents(len(out), store.max_append_events)
        return out


async def request(
    registry: EventRegistry, store: EventStore, r: Routed, decided: list[Any], expected: Expected
) -> tuple[list[Any], AppendRequest]:
    """The decided events (typed) and the append they make, the general way: ``typed``,
    personal-data keys, ``event_data``, ``store.prepare``."""
    is_typed = r.model.typed_events
    events = [typed(registry, e) for e in decided] if is_typed else decided
    if is_typed and registry.keys is not None:  # personal-data subject keys
        await registry.load_keys(events)
    reg = registry if is_typed else None  # None: untyped logic returns EventData
    data = event_data(reg, events, r.command, r.command_id, r.metadata, r.first)
    return events, store.prepare(r.stream, data, expected)


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
    metadata: Mapping[str, str],
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
    event: Any, metadata: Mapping[str, str], command: Command, command_id: str, index: int
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
    known = recorded_now(request, result)
    if known is not None:
        return known
    got = store.read_stream(request.stream, result.first_sequence, limit=len(request.events))
    return [e async for e in got]


def recorded_now(request: AppendRequest, result: AppendResult) -> list[RecordedEvent] | None:
    """The events an append stored, when the adapter reported their positions (else None)."""
    events, stream, first = request.events, request.stream, result.first_sequence
    positions, at = result.positions, result.recorded_at_us
    if len(positions) != len(events) or not at:
        return None
    if len(events) == 1:  # the common case, without a comprehension's frame
        return [_recorded(events[0], stream, first, positions[0], at)]
    return [_recorded(p, stream, first + i, positions[i], at) for i, p in enumerate(events)]


def _recorded(
    p: PreparedEvent, stream: StreamId, sequence: int, position: Position, at: int
) -> RecordedEvent:
    eid, etype, version, payload, md, ct, tags = p  # all positional: *args takes twice as long
    return RecordedEvent(eid, stream, sequence, etype, version, payload, position, at, md, ct, tags)


async def earlier(
    store: EventStore, stream: StreamId, command_id: str, first_id: str
) -> list[RecordedEvent] | None:
    """The events an earlier dispatch of ``command_id`` appended to ``stream`` (``first_id``:
    the id of its first event); None if it appended none. ValidationError when the id was
    used for another stream."""
    first = await store.get_event(first_id)
    if first is None:
        return None
    if first.stream != stream:
        raise ValidationError(
            f"command id {command_id!r} was already used for {first.stream}", field="command_id"
        )
    events: list[RecordedEvent] = []
    async for event in store.read_stream(stream, first.sequence):
        if event.event_id != event_id_for(command_id, len(events)):
            break
        events.append(event)
    return events


class LogicErrors:
    """``with LogicErrors(command):`` a failure of the business logic (any exception but a
    ChronikError) becomes the command's HandlerError (both dispatch paths)."""

    __slots__ = ("command",)

    def __init__(self, command: Command) -> None:
        self.command = command

    def __enter__(self) -> None:
        return None

    def __exit__(self, tp: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            logic_failed(self.command, exc)


def logic_failed(command: Command, exc: BaseException) -> None:
    """Raise ``command``'s HandlerError from ``exc`` when it is a failure of the business
    logic (any exception but a ChronikError); return otherwise (``LogicErrors`` inline)."""
    if isinstance(exc, Exception) and not isinstance(exc, ChronikError):
        raise HandlerError(command.domain, command.type, exc) from exc
