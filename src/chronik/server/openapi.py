"""The OpenAPI 3.1 document of the HTTP gateway (served at /openapi.json).

Given the app's schema catalog (``chronik.server.catalog``), the body of ``POST /v1/commands``
is a ``oneOf`` of each domain's command types with their payload schemas, and each configured
live query gets its own path with its parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from chronik.server import openapi_schemas as schemas
from chronik.server.catalog import CATALOG_SCHEMA, Catalog, command_union
from chronik.server.openapi_gdpr import gdpr_paths
from chronik.server.openapi_retention import retention_paths
from chronik.server.openapi_schemas import component_schemas

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


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema or {"type": "string", "minLength": 1},
    }


_LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size")


def openapi_document(
    catalog: Catalog | None = None, queries: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """The document (built on each call; it is small): command bodies from ``catalog``, one
    path per live query (name -> parameters) of ``queries``."""
    doc = _document()
    doc["paths"].update(gdpr_paths())
    doc["paths"].update(retention_paths())
    schemas = doc["components"]["schemas"]
    if catalog is not None:
        union, components = command_union(catalog, schemas["Command"])
        schemas.update(components)
        body = doc["paths"]["/v1/commands"]["post"]["requestBody"]["content"]["application/json"]
        body["schema"] = union
    for name, names in (queries or {}).items():
        path = copy.deepcopy(doc["paths"]["/v1/queries/{name}"])
        path["get"]["summary"] = f"The live query {name}"
        path["get"]["parameters"] = _live_query_parameters(names)
        path["get"]["responses"] = {"200": _LIVE_QUERY_OK, **_errors(400, 401, 403, 404)}
        doc["paths"]["/v1/queries/" + quote(name, safe="")] = path
    return doc


_FILTERS = {
    "": "equal to",
    ".gt": "greater than",
    ".gte": "at least",
    ".lt": "less than",
    ".lte": "at most",
    ".in": "one of (comma-separated, at most 100)",
}
_LIVE_QUERY_OK = {
    "description": (
        "a page of rows; as SSE (Accept: text/event-stream) `event: page` with the same body, "
        "then `event: upsert` (a row that entered or changed) and `event: delete` (the key of "
        "a row that left), each with the projection's checkpoint as its `id`"
    ),
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["query", "rows", "next_cursor"],
                "properties": {
                    "query": {"type": "string"},
                    "rows": {"type": "array", "items": {"type": "object"}},
                    "next_cursor": {"type": ["string", "null"]},
                },
            }
        },
        "text/event-stream": {"schema": {"type": "string"}},
    },
}


def _live_query_parameters(names: Sequence[str]) -> list[dict[str, Any]]:
    """A live query's filters (each declared column with its operators) and paging."""
    out = [
        _query(
            f"{p}{op}",
            {"type": "string", "maxLength": 1024},
            f"rows whose {p} is {what} this (converted to the column's type)",
        )
        for p in names
        for op, what in _FILTERS.items()
    ]
    return [
        *out,
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (100)"),
        _query(
            "order",
            {"type": "string", "pattern": "^-?[a-z_][a-z0-9_]*(,-?[a-z_][a-z0-9_]*){0,3}$"},
            "columns (filters or the primary key; -column descending); the key breaks ties",
        ),
        _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
    ]


def _document() -> dict[str, Any]:
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
                    "description": (
                        "Values are checked at the edge: integers must fit int64, numbers be "
                        "finite (no NaN/Infinity), nesting at most 64 levels, text valid UTF-8 "
                        "without lone surrogates; a refusal is 400 naming the field (such as "
                        "`payload.amount`). With `wait=projections` the answer is 200 with "
                        '`"projections": "caught_up"` once every projection applied the '
                        'events, or 202 with the same committed result and `"projections": '
                        '"pending"` when they did not within `wait_timeout`: the command is '
                        "committed either way, do not send it again (a retry with the same "
                        "command_id is answered as a duplicate)."
                    ),
                    "parameters": [
                        _query(
                            "wait",
                            {"type": "string", "enum": ["projections"]},
                            "wait until the projections applied its events",
                        ),
                        _query(
                            "wait_timeout",
                            {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": 60,
                                "default": 10,
                            },
                            "seconds to wait (with wait=projections)",
                        ),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Command"}}
                        },
                    },
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/CommandResult"}),
                        "202": _json(
                            {"$ref": "#/components/schemas/CommandResult"},
                            "committed; projections pending after wait_timeout",
                        ),
                        **_errors(400, 401, 403, 404, 409, 413, 422, 503),
                    },
                }
            },
            "/v1/streams": {
                "get": {
                    "summary": "List streams",
                    "parameters": [
                        _query("domain", schemas.DOMAIN),
                        _query("prefix", schemas.TEXT),
                        _LIMIT,
                    ],
                    "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403)},
                }
            },
            "/v1/streams/{domain}/{aggregate_id}/events": {
                "get": {
                    "summary": "Read one stream",
                    "parameters": [
                        _path("domain", schemas.DOMAIN),
                        _path("aggregate_id", schemas.AGGREGATE_ID),
                        _query("from", {"type": "integer", "minimum": 0, "maximum": schemas.INT64}),
                        _LIMIT,
                        _query("tenant", schemas.TENANT),
                    ],
                    "responses": {"200": _json(schemas.EVENTS), **_errors(400, 401, 403, 404, 422)},
                }
            },
            "/v1/events": {
                "get": {
                    "summary": "Read all events in commit order",
                    "parameters": [
                        _query("after", schemas.POSITION),
                        _query("before", schemas.POSITION),
                        _query("domain", schemas.DOMAIN),
                        _query("type", schemas.EVENT_TYPE),
                        _query("order", {"type": "string", "enum": ["asc", "desc"]}),
                        _LIMIT,
                    ],
                    "responses": {"200": _json(schemas.EVENTS), **_errors(400, 401, 403)},
                }
            },
            "/v1/events/stream": {
                "get": {
                    "summary": "SSE: live events from now; from=start or after= catch up first",
                    "description": (
                        "Starts at the current head (the first frame carries only its `id`, "
                        "so a reconnecting EventSource resumes from there); `from=start` "
                        "replays the whole history first, `after=POSITION` the events after "
                        "it; `Last-Event-ID` (a reconnect) wins over both."
                    ),
                    "parameters": [
                        _query("from", {"type": "string", "enum": ["now", "start"]}),
                        _query("after", schemas.POSITION),
                        _query("domain", schemas.DOMAIN),
                        _query("type", schemas.EVENT_TYPE),
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": schemas.POSITION,
                        },
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
            "/v1/schemas": {
                "get": {
                    "summary": "The JSON Schema of every command (per domain) and event type",
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Catalog"}),
                        **_errors(401, 403),
                    },
                }
            },
            "/v1/queries/{name}": {
                "get": {
                    "summary": "A live query: read-model rows (SSE with Accept: text/event-stream)",
                    "parameters": [_path("name", schemas.NAME)],
                    "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403, 404)},
                }
            },
            **schemas.dcb_paths(),
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
                    "summary": "Ask a projection to rebuild, pause, resume, reset or repartition",
                    "description": (
                        "Admin writes: with auth configured they need the admin right; without "
                        "auth they are refused (403 AdminWritesDisabled) unless the server "
                        "enables them (http.admin_writes). `to` applies to reset only and "
                        "must not be past the head (400)."
                    ),
                    "parameters": [
                        _path("name", schemas.NAME),
                        {
                            "name": "action",
                            "in": "path",
                            "required": True,
                            "schema": {
                                "type": "string",
                                "enum": ["rebuild", "pause", "resume", "reset", "repartition"],
                            },
                        },
                        _query("to", schemas.POSITION),
                        _query(
                            "partitions",
                            {"type": "integer", "minimum": 2, "maximum": 256},
                            "repartition only: the new partition count",
                        ),
                    ],
                    "responses": {"202": _json({"type": "object"}), **_errors(400, 401, 403, 404)},
                }
            },
            "/v1/projections/{name}/dead-letters": {
                "get": {
                    "summary": "Parked events of a projection",
                    "parameters": [_path("name", schemas.NAME)],
                    "responses": {"200": _json({"type": "array"}), **_errors(401, 403, 404)},
                }
            },
            "/v1/projections/{name}/dead-letters/{action}": {
                "post": {
                    "summary": "Retry or drop parked events (all, or one by event_id)",
                    "description": "Admin writes: see /v1/projections/{name}/{action}.",
                    "parameters": [
                        _path("name", schemas.NAME),
                        {
                            "name": "action",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": ["retry", "drop"]},
                        },
                        _query("event_id", {**schemas.TEXT, "maxLength": 64}),
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
        "components": {"schemas": {"Catalog": CATALOG_SCHEMA, **component_schemas()}},
    }
