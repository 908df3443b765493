"""The JSON Schemas of the HTTP gateway's own values and bodies (OpenAPI components):
identifiers, positions, commands, results, events, problems, projection statuses, and the DCB
bodies (queries, tagged events, append conditions).

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
    "TAG",
    "TENANT",
    "TEXT",
    "component_schemas",
    "dcb_paths",
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
TAG = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "description": "a DCB tag such as course:c1: printable characters without spaces",
}
_OPTIONAL_POSITION = {**POSITION, "type": ["string", "null"]}
_TAGS = {"type": "array", "items": TAG, "description": "at most 32 distinct tags"}
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
                "item": {"type": "integer", "description": "AppendConditionFailed: its item"},
                "position": {"type": "string", "description": "of the first matching event"},
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
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        },
        **_dcb_schemas(),
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


def _dcb_schemas() -> dict[str, Any]:
    query = {"$ref": "#/components/schemas/Query"}
    return {
        "QueryItem": {
            "type": "object",
            "additionalProperties": False,
            "description": "events of one of the types (any when none) carrying all the tags",
            "properties": {"types": {"type": "array", "items": EVENT_TYPE}, "tags": _TAGS},
        },
        "Query": {
            "type": "object",
            "required": ["items"],
            "additionalProperties": False,
            "description": "events matching any item",
            "properties": {
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 64,
                    "items": {"$ref": "#/components/schemas/QueryItem"},
                }
            },
        },
        "DcbRead": {
            "type": "object",
            "required": ["query"],
            "additionalProperties": False,
            "properties": {
                "query": query,
                "after": _OPTIONAL_POSITION,
                "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                "backward": {"type": "boolean", "default": False},
            },
        },
        "DcbEvents": {
            "type": "object",
            "required": ["events", "last_position"],
            "properties": {
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                "last_position": {"type": ["string", "null"]},
            },
        },
        "TaggedEvent": {
            "type": "object",
            "required": ["type", "payload"],
            "additionalProperties": False,
            "properties": {
                "type": EVENT_TYPE,
                "payload": {},
                "tags": _TAGS,
                "event_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
                "metadata": {
                    "type": ["object", "null"],
                    "additionalProperties": {"type": "string"},
                },
                "schema_version": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            },
        },
        "AppendCondition": {
            "type": "object",
            "required": ["fail_if_events_match"],
            "additionalProperties": False,
            "properties": {"fail_if_events_match": query, "after": _OPTIONAL_POSITION},
        },
        "DcbAppend": {
            "type": "object",
            "required": ["events"],
            "additionalProperties": False,
            "properties": {
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"$ref": "#/components/schemas/TaggedEvent"},
                },
                "condition": {
                    "anyOf": [{"$ref": "#/components/schemas/AppendCondition"}, {"type": "null"}]
                },
                "domain": {**DOMAIN, "default": "dcb"},
                "tenant": TENANT,
            },
        },
        "DcbAppended": {
            "type": "object",
            "required": ["positions", "position"],
            "properties": {
                "positions": {"type": "array", "items": {"type": "string"}},
                "position": {"type": "string"},
            },
        },
    }


def dcb_paths() -> dict[str, Any]:
    """The paths of ``POST /v1/dcb/read`` and ``POST /v1/dcb/append``."""

    def body(name: str) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{name}"}
        return {"required": True, "content": {"application/json": {"schema": ref}}}

    return {
        "/v1/dcb/read": {
            "post": {
                "summary": "DCB: the events a query matches, in the global order",
                "description": (
                    "Forward, the events after `after`; backward (newest first), those before "
                    "it. `last_position` (the last event's) is a safe condition `after` for a "
                    "decision made from them. Needs the read right with auth."
                ),
                "requestBody": body("DcbRead"),
                "responses": {
                    "200": _ok("DcbEvents"),
                    **_problems(400, 401, 403, 413, 422, 503),
                },
            }
        },
        "/v1/dcb/append": {
            "post": {
                "summary": "DCB: append tagged events unless the condition fails",
                "description": (
                    "Raw appends: refused (403) unless the server enables them "
                    "(http.raw_append), and with auth they need the append right. A failed "
                    "condition is 409 AppendConditionFailed with the query `item` and the "
                    "`position` of the first matching event, and nothing is written; the same "
                    "events again (same event ids) answer their original positions."
                ),
                "requestBody": body("DcbAppend"),
                "responses": {
                    "200": _ok("DcbAppended"),
                    **_problems(400, 401, 403, 409, 413, 422, 503),
                },
            }
        },
    }


def _ok(name: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"description": "ok", "content": {"application/json": {"schema": ref}}}


def _problems(*codes: int) -> dict[str, Any]:
    problem = {"$ref": "#/components/schemas/Problem"}
    content = {"application/problem+json": {"schema": problem}}
    return {str(c): {"description": "a problem", "content": content} for c in codes}
