"""The OpenAPI 3.1 document of the HTTP gateway (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(c): {
            "description": "a problem",
            "content": {"application/problem+json": {"schema": _PROBLEM}},
        }
        for c in codes
    }


def _json(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    }


_LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size")
_POSITION = {"type": "string", "description": "an opaque position from an event"}
_EVENTS = {
    "type": "object",
    "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}},
}


def openapi_document() -> dict[str, Any]:
    """The document (built on each call; it is small)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chronik",
            "version": "1",
            "description": "Commands and events over HTTP.",
        },
        "paths": {
            "/v1/commands": {
                "post": {
                    "summary": "Handle a command",
                    "parameters": [
                        _query(
                            "wait",
                            {"type": "string", "enum": ["projections"]},
                            "wait until the projections applied its events",
                        )
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Command"}}
                        },
                    },
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/CommandResult"}),
                        **_errors(400, 401, 403, 404, 409, 422, 503),
                    },
                }
            },
            "/v1/streams": {
                "get": {
                    "summary": "List streams",
                    "parameters": [
                        _query("domain", {"type": "string"}),
                        _query("prefix", {"type": "string"}),
                        _LIMIT,
                    ],
                    "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403)},
                }
            },
            "/v1/streams/{domain}/{aggregate_id}/events": {
                "get": {
                    "summary": "Read one stream",
                    "parameters": [
                        _path("domain"),
                        _path("aggregate_id"),
                        _query("from", {"type": "string", "pattern": "^[0-9]+$"}),
                        _LIMIT,
                        _query("tenant", {"type": "string"}),
                    ],
                    "responses": {"200": _json(_EVENTS), **_errors(400, 401, 403)},
                }
            },
            "/v1/events": {
                "get": {
                    "summary": "Read all events in commit order",
                    "parameters": [
                        _query("after", _POSITION),
                        _query("before", _POSITION),
                        _query("domain", {"type": "string"}),
                        _query("type", {"type": "string"}),
                        _query("order", {"type": "string", "enum": ["asc", "desc"]}),
                        _LIMIT,
                    ],
                    "responses": {"200": _json(_EVENTS), **_errors(400, 401, 403)},
                }
            },
            "/v1/events/stream": {
                "get": {
                    "summary": "SSE: events after a position, then live (Last-Event-ID resumes)",
                    "parameters": [
                        _query("after", _POSITION),
                        _query("domain", {"type": "string"}),
                        _query("type", {"type": "string"}),
                    ],
                    "responses": {
                        "200": {
                            "description": "an event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/v1/queries/{name}": {
                "get": {
                    "summary": "A live query: read-model rows (SSE with Accept: text/event-stream)",
                    "parameters": [_path("name")],
                    "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403, 404)},
                }
            },
            "/v1/projections": {
                "get": {
                    "summary": "Status of every projection",
                    "responses": {
                        "200": _json(
                            {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/ProjectionStatus"},
                            }
                        ),
                        **_errors(401, 403),
                    },
                }
            },
            "/v1/projections/{name}/{action}": {
                "post": {
                    "summary": "Ask a projection to rebuild, pause, resume or reset (to=POSITION)",
                    "parameters": [
                        _path("name"),
                        {
                            "name": "action",
                            "in": "path",
                            "required": True,
                            "schema": {
                                "type": "string",
                                "enum": ["rebuild", "pause", "resume", "reset"],
                            },
                        },
                        _query("to", _POSITION),
                    ],
                    "responses": {"202": _json({"type": "object"}), **_errors(400, 401, 403, 404)},
                }
            },
            "/v1/projections/{name}/dead-letters": {
                "get": {
                    "summary": "Parked events of a projection",
                    "parameters": [_path("name")],
                    "responses": {"200": _json({"type": "array"}), **_errors(401, 403, 404)},
                }
            },
            "/v1/projections/{name}/dead-letters/{action}": {
                "post": {
                    "summary": "Retry or drop parked events (all, or one by event_id)",
                    "parameters": [
                        _path("name"),
                        {
                            "name": "action",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": ["retry", "drop"]},
                        },
                        _query("event_id", {"type": "string"}),
                    ],
                    "responses": {
                        "200": _json({"type": "object"}),
                        "202": _json({"type": "object"}),
                        **_errors(400, 401, 403, 404),
                    },
                }
            },
            "/healthz": {
                "get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"})}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: store reachable, projections not stalled",
                    "responses": {
                        "200": _json({"type": "object"}),
                        "503": _json({"type": "object"}),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
                "Command": {
                    "type": "object",
                    "required": ["domain", "aggregate_id", "type"],
                    "additionalProperties": False,
                    "properties": {
                        "domain": {"type": "string"},
                        "aggregate_id": {"type": "string"},
                        "type": {"type": "string"},
                        "payload": {"type": "object"},
                        "command_id": {"type": "string"},
                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        "expected_sequence": {"type": "integer"},
                        "tenant": {"type": "string"},
                    },
                },
                "CommandResult": {
                    "type": "object",
                    "properties": {
                        "command_id": {"type": "string"},
                        "stream": {"type": "string"},
                        "version": {"type": ["integer", "null"]},
                        "duplicate": {"type": "boolean"},
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
        },
    }
