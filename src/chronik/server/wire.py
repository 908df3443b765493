"""Conversions between the wire messages (chronik.v1) and chronik's own types.

A failed call carries its chronik error in trailing metadata (``error_trailers``):
``chronik-error`` names the class, ``chronik-error-data`` holds its fields as ASCII JSON (a
StreamId as ``{"$stream": {...}}``, an expected state as ``{"$expected": "NO_STREAM"}``; left
out when over ``MAX_ERROR_DATA`` characters, a Position as ``{"$position": "42"}``), so a
client rebuilds the same error with its data (``error_data_from_wire`` +
``ChronikError.from_data``). DCB queries travel as ``Query`` messages (``query_to_wire`` /
``query_from_wire``), tags on ``Event`` and ``NewEvent``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
from google.protobuf.timestamp_pb2 import Timestamp

from chronik.dcb import Query
from chronik.errors import ChronikError, ValidationError
from chronik.messages import (
    ANY,
    JSON,
    NO_STREAM,
    STREAM_EXISTS,
    Command,
    EventData,
    Expected,
    ExpectedState,
    Position,
    RecordedEvent,
    Snapshot,
    StreamId,
)
from chronik.server.edge_input import query_of
from chronik.v1 import chronik_pb2 as pb

__all__ = [
    "ERROR_DATA_KEY",
    "ERROR_KEY",
    "MAX_ERROR_DATA",
    "command_from_wire",
    "command_to_wire",
    "error_data_from_wire",
    "error_trailers",
    "event_data_from_wire",
    "event_data_to_wire",
    "event_from_wire",
    "event_to_wire",
    "expected_from_wire",
    "position_from_wire",
    "query_from_wire",
    "query_to_wire",
    "snapshot_to_wire",
]

ERROR_KEY: Final = "chronik-error"  # trailing metadata: the chronik error class name
ERROR_DATA_KEY: Final = "chronik-error-data"  # trailing metadata: its fields, as JSON
MAX_ERROR_DATA: Final = 4096  # characters; larger field sets are left out (headers are small)
_metadata_encoder = msgspec.json.Encoder(order="sorted")  # as the stores encode metadata
_metadata_decoder = msgspec.json.Decoder(dict[str, str])
_EXPECTED_STATES = {
    pb.EXPECTED_ANY: ANY,
    pb.EXPECTED_NO_STREAM: NO_STREAM,
    pb.EXPECTED_STREAM_EXISTS: STREAM_EXISTS,
}


def event_to_wire(event: RecordedEvent) -> pb.Event:
    """A stored event as a wire Event."""
    s, at, md = event.stream, event.recorded_at_us, event.raw_metadata
    return pb.Event(
        event_id=event.event_id,
        domain=s.domain,
        aggregate_id=s.aggregate_id,
        tenant=s.tenant,
        sequence=event.sequence,
        type=event.type,
        schema_version=event.schema_version,
        payload=event.payload,
        metadata=_metadata_decoder.decode(md) if md else None,  # as RecordedEvent.metadata
        recorded_at=Timestamp(seconds=at // 1_000_000, nanos=at % 1_000_000 * 1000),
        position=str(event.position),
        content_type="" if event.content_type == JSON else event.content_type,
        tags=event.tags,
    )


def event_from_wire(event: pb.Event) -> RecordedEvent:
    """A wire Event as a RecordedEvent (for clients and business-logic services)."""
    return RecordedEvent(
        event.event_id,
        StreamId(event.domain, event.aggregate_id, event.tenant),
        event.sequence,
        event.type,
        event.schema_version,
        event.payload,
        Position.parse(event.position),
        event.recorded_at.ToMicroseconds(),
        _metadata_encoder.encode(dict(event.metadata)) if event.metadata else None,
        event.content_type or JSON,
        tuple(event.tags),
    )


def event_data_from_wire(event: pb.NewEvent) -> EventData:
    """A NewEvent as EventData (its id kept when given)."""
    data = EventData(
        event.type,
        bytes(event.payload),
        dict(event.metadata) or None,
        schema_version=event.schema_version or 1,
        content_type=event.content_type or JSON,
        tags=list(event.tags),
    )
    if event.event_id:
        data.event_id = event.event_id
    return data


def event_data_to_wire(event: EventData) -> pb.NewEvent:
    """EventData as a NewEvent (its id kept, so a retried append stores it once)."""
    raw = event.payload
    payload = bytes(raw) if isinstance(raw, bytes | bytearray) else msgspec.json.encode(raw)
    metadata: Mapping[str, str] = event.metadata or {}
    return pb.NewEvent(
        type=event.type,
        payload=payload,
        metadata=dict(metadata),
        schema_version=event.schema_version,
        event_id=event.event_id,
        content_type="" if event.content_type == JSON else event.content_type,
        tags=list(event.tags),
    )


def expected_from_wire(request: pb.AppendRequest) -> Expected:
    """The expectation of an AppendRequest (ANY when none is set)."""
    which = request.WhichOneof("expected")
    if which == "sequence":
        return int(request.sequence)
    if which == "state":
        state = _EXPECTED_STATES.get(request.state)
        if state is None:
            raise ValidationError(f"unknown expected state {request.state}", field="expected")
        return state
    return ANY


def command_from_wire(request: pb.CommandRequest) -> Command:
    """A CommandRequest as a Command (payload left as JSON bytes for the domain to parse)."""
    return Command(
        domain=request.domain,
        aggregate_id=request.aggregate_id,
        type=request.type,
        payload=bytes(request.payload) or b"{}",
        command_id=request.command_id or None,
        metadata=dict(request.metadata) or None,
        expected_sequence=(
            request.expected_sequence if request.HasField("expected_sequence") else None
        ),
        tenant=request.tenant,
    )


def command_to_wire(command: Command, payload: bytes | None = None) -> pb.CommandRequest:
    """A Command as a CommandRequest (``payload``: the JSON bytes, if already encoded)."""
    if payload is None:
        raw = command.payload
        payload = bytes(raw) if isinstance(raw, bytes | bytearray) else msgspec.json.encode(raw)
    metadata: Mapping[str, str] = command.metadata or {}
    request = pb.CommandRequest(
        domain=command.domain,
        aggregate_id=command.aggregate_id,
        type=command.type,
        payload=payload,
        command_id=command.command_id or "",
        metadata=dict(metadata),
        tenant=command.tenant,
    )
    if command.expected_sequence is not None:
        request.expected_sequence = command.expected_sequence
    return request


def snapshot_to_wire(snapshot: Snapshot | None) -> pb.Snapshot | None:
    """A Snapshot as a wire Snapshot."""
    if snapshot is None:
        return None
    return pb.Snapshot(
        sequence=snapshot.sequence,
        type=snapshot.type,
        schema_version=snapshot.schema_version,
        state=snapshot.state,
    )


def position_from_wire(text: str, field: str = "position") -> Position | None:
    """A position string (empty: None); ValidationError naming ``field`` when it is not one
    (negative, beyond int64, garbage)."""
    return Position.parse(text, field) if text else None


def query_to_wire(query: Query) -> pb.Query:
    """A chronik Query as a wire Query."""
    return pb.Query(
        items=[pb.QueryItem(types=list(i.types), tags=list(i.tags)) for i in query.items]
    )


def query_from_wire(query: pb.Query, field: str = "query") -> Query:
    """A wire Query as a chronik Query; ValidationError naming the field below ``field`` that
    is out of shape (``query.items[0].tags``)."""
    return query_of([(list(i.types), list(i.tags)) for i in query.items], field)


# --- errors -----------------------------------------------------------------------------------


class _Unsent(Exception):
    """A field value that does not travel (an exception, an object): it is left out."""


def _field_to_json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unsent
        return value
    if isinstance(value, StreamId):
        return {
            "$stream": {
                "domain": value.domain,
                "aggregate_id": value.aggregate_id,
                "tenant": value.tenant,
            }
        }
    if isinstance(value, ExpectedState):
        return {"$expected": value.name}
    if isinstance(value, Position):
        return {"$position": str(value)}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise _Unsent
        return {k: _field_to_json(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_field_to_json(v) for v in value]
    raise _Unsent


def error_trailers(exc: ChronikError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata naming ``exc``'s class, and its public fields as JSON."""
    fields: dict[str, Any] = {}
    for name, value in vars(exc).items():
        if name.startswith("_"):
            continue
        try:
            fields[name] = _field_to_json(value)
        except _Unsent:
            continue
    text = json.dumps(fields, ensure_ascii=True, separators=(",", ":"), sort_keys=True)
    named = (ERROR_KEY, type(exc).__name__)
    if not fields or len(text) > MAX_ERROR_DATA:
        return (named,)
    return (named, (ERROR_DATA_KEY, text))


def _field_from_json(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        stream = obj.get("$stream")
        if isinstance(stream, dict):
            try:
                return StreamId(**stream)
            except (TypeError, ValidationError):
                return obj
        state = obj.get("$expected")
        if isinstance(state, str) and state in ExpectedState.__members__:
            return ExpectedState[state]
        position = obj.get("$position")
        if isinstance(position, str):
            try:
                return Position.parse(position)
            except ValidationError:
                return obj
    return obj


def error_data_from_wire(text: str | bytes) -> dict[str, Any]:
    """The fields of an error sent as ``chronik-error-data`` (empty if they do not parse)."""
    try:
        data = json.loads(text, object_hook=_field_from_json)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return {}
    return data if isinstance(data, dict) else {}
