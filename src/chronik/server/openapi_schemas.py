"""The JSON Schemas of the HTTP gateway's own values and bodies (OpenAPI components):
identifiers, positions, commands, results, events, problems, projection statuses.

Plain data for ``chronik.server.openapi``; imports nothing of chronik.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AGGREGATE_ID",
    "DOMAIN",
    "EVENTS",
    "EVENT_TYPE",
    "INT64",
    "NAME",
    "POSITION",
    "TENANT",
    "TEXT",
    "component_schemas",
]

INT64 = 2**63 - 1
POSITION = {
    "type": "string",
    "pattern": "^[0-9]{1,19}(:[0-9]{1,19})?$",
    "description": "a position from an event (each part 0..2**63-1); opaque to clients",
}
DOMAIN = {"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,63}$"}
AGGREGATE_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    "pattern": "^[^\\x00-\\x1f\\x7f]+$",
    "description": "1..256 printable characters",
}
TENANT = {"type": "string", "pattern": "^([a-z0-9][a-z0-9_.-]{0,63})?$"}
EVENT_TYPE = {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_.:-]{0,127}$"}
TEXT = {"type": "string", "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}
NAME = {"type": "string", "minLength": 1, "maxLength": 200}
EVENTS = {
    "type": "object",
    "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}},
}


def component_schemas() -> dict[str, Any]:
    """The named schemas the paths refer to (``#/components/schemas/...``), built afresh."""
    return {
        "Problem": {
            "type": "object",
            "required": ["title", "status", "detail"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "reason": {"type": "string", "description": "a business rejection"},
                "field": {"type": "string", "description": "the refused input"},
                "event_id": {"type": "string", "description": "UndecodableEvent"},
                "stream": {"type": "string"},
                "sequence": {"type": "integer"},
                "event_type": {"type": "string"},
                "schema_version": {"type": "integer"},
            },
        },
        "Command": {
            "type": "object",
            "required": ["domain", "aggregate_id", "type"],
            "additionalProperties": False,
            "properties": {
                "domain": DOMAIN,
                "aggregate_id": AGGREGATE_ID,
                "type": {"type": "string"},
                "payload": {"type": "object"},
                "command_id": {"type": "string"},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "expected_sequence": {"type": "integer", "minimum": 0, "maximum": INT64},
                "tenant": TENANT,
            },
        },
        "CommandResult": {
            "type": "object",
            "properties": {
                "command_id": {"type": "string"},
                "stream": {"type": "string"},
                "version": {"type": ["integer", "null"]},
                "duplicate": {"type": "boolean"},
                "projections": {
                    "type": "string",
                    "enum": ["caught_up", "pending"],
                    "description": "with wait=projections only",
                },
                "events": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Event"},
                },
            },
        },
        "Event": {
            "type": "object",
            "properties": {
                "event_id": {"type": "string"},
                "stream": {"type": "string"},
                "domain": {"type": "string"},
                "aggregate_id": {"type": "string"},
                "tenant": {"type": "string"},
                "sequence": {"type": "integer"},
                "type": {"type": "string"},
                "schema_version": {"type": "integer"},
                "payload": {},
                "content_type": {"type": "string"},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "recorded_at": {"type": "string"},
                "position": {"type": "string"},
            },
        },
        "ProjectionStatus": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "state": {"type": "string"},
                "position": {"type": ["string", "null"]},
                "head": {"type": ["string", "null"]},
                "lag_events": {"type": "integer"},
                "lag_seconds": {"type": "number"},
                "last_error": {"type": ["string", "null"]},
            },
        },
    }
