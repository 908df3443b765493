"""Sealing and opening whole events at rest (``chronik.personal.at_rest``) for the registry:
``seal_event`` builds the EventData ``to_event_data`` returns, ``open_event`` gives a sealed
RecordedEvent its JSON payload back. Imports chronik.messages, chronik.values and
``at_rest``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from chronik.messages import JSON, EventData, Metadata, RecordedEvent
from chronik.personal.at_rest import SEALED, AtRest, open_sealed
from chronik.values import encode_json

__all__ = ["open_event", "seal_event"]


def seal_event(
    at_rest: AtRest,
    name: str,
    version: int,
    payload: Any,
    metadata: Metadata | Mapping[str, str] | None,
    event_id: str | None,
) -> EventData:
    """An EventData whose payload is ``payload`` as JSON (the value rule checked), sealed."""
    stored = at_rest.seal(name, encode_json(payload))
    if event_id is None:
        return EventData(name, stored, metadata, schema_version=version, content_type=SEALED)
    return EventData(name, stored, metadata, event_id, version, SEALED)


def open_event(event: RecordedEvent, at_rest: AtRest | None) -> RecordedEvent:
    """A sealed event with its JSON payload (any other event as it is); DeserializationError
    when it does not open (a key not given, altered bytes)."""
    if event.content_type != SEALED:
        return event
    keys = None if at_rest is None else at_rest.keys
    plain = open_sealed(event.type, event.payload, keys)
    return msgspec.structs.replace(event, payload=plain, content_type=JSON)
