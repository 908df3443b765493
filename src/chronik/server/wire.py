"""Conversions between the wire messages (chronik.v1) and chronik's own types."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from google.protobuf.timestamp_pb2 import Timestamp

from chronik.errors import ValidationError
from chronik.messages import (
    ANY,
    JSON,
    NO_STREAM,
    STREAM_EXISTS,
    Command,
    EventData,
    Expected,
    Position,
    RecordedEvent,
    Snapshot,
    StreamId,
)
from chronik.v1 import chronik_pb2 as pb

__all__ = [
    "command_from_wire",
    "command_to_wire",
    "event_data_from_wire",
    "event_from_wire",
    "event_to_wire",
    "expected_from_wire",
    "position_from_wire",
    "snapshot_to_wire",
]

_metadata_encoder = msgspec.json.Encoder(order="sorted")  # as the stores encode metadata
_EXPECTED_STATES = {
    pb.EXPECTED_ANY: ANY,
    pb.EXPECTED_NO_STREAM: NO_STREAM,
    pb.EXPECTED_STREAM_EXISTS: STREAM_EXISTS,
}


def event_to_wire(event: RecordedEvent) -> pb.Event:
    """A stored event as a wire Event."""
    at = Timestamp()
    at.FromMicroseconds(event.recorded_at_us)
    s = event.stream
    return pb.Event(
        event_id=event.event_id,
        domain=s.domain,
        aggregate_id=s.aggregate_id,
        tenant=s.tenant,
        sequence=event.sequence,
        type=event.type,
        schema_version=event.schema_version,
        payload=event.payload,
        metadata=dict(event.metadata),
        recorded_at=at,
        position=str(event.position),
        content_type="" if event.content_type == JSON else event.content_type,
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
    )


def event_data_from_wire(event: pb.NewEvent) -> EventData:
    """A NewEvent as EventData (its id kept when given)."""
    data = EventData(
        event.type,
        bytes(event.payload),
        dict(event.metadata) or None,
        schema_version=event.schema_version or 1,
        content_type=event.content_type or JSON,
    )
    if event.event_id:
        data.event_id = event.event_id
    return data


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
