"""The OpenAPI paths of the stream-over-time endpoints (``chronik.server.http_retention``) that
change a stream's history (compaction), and the retention defaults per tenant.

Plain data merged into the document by ``chronik.server.openapi``; imports nothing of it.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["MAX_SEQUENCE", "retention_paths"]

#: The highest sequence a request may name (every store holds it).
MAX_SEQUENCE: Final = 2**62 - 1
_NAME: Final = {"type": "string", "minLength": 1, "maxLength": 256}
_WRITES: Final = (
    "Admin write: with auth configured it needs the admin right; without auth it is refused "
    "(403 AdminWritesDisabled) unless the server enables admin writes (http.admin_writes). "
)


def _problems(*codes: int) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Problem"}
    content = {"application/problem+json": {"schema": schema}}
    return {str(c): {"description": "a problem", "content": content} for c in codes}


def retention_paths() -> dict[str, Any]:
    """``/v1/admin/streams/compact``."""
    body = {
        "type": "object",
        "properties": {
            "domain": _NAME,
            "aggregate_id": _NAME,
            "tenant": {"type": "string", "maxLength": 256},
            "upto": {"type": "integer", "minimum": 0, "maximum": MAX_SEQUENCE},
        },
        "required": ["domain", "aggregate_id", "upto"],
        "additionalProperties": False,
    }
    answer = {
        "type": "object",
        "properties": {
            "stream": {"type": "string"},
            "upto": {"type": "integer"},
            "event_id": {"type": "string"},
            "type": {"type": "string"},
            "position": {"type": "string"},
        },
        "required": ["stream", "upto", "event_id", "type", "position"],
    }
    return {
        "/v1/admin/streams/compact": {
            "post": {
                "summary": "Close the books of an aggregate's stream at a sequence",
                "description": _WRITES
                + "The domain's model sums up events 0..upto (its state's closing_event()); the "
                "summary takes the place of the event at upto and the events before it are "
                "hidden at once and removed by the scavenger. A retry answers the same summary. "
                "404 for a domain the app does not handle or a tombstoned stream, 400 when no "
                "event is shown at upto, 409 on a store without deletion.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "responses": {
                    "200": {
                        "description": "the summary as stored",
                        "content": {"application/json": {"schema": answer}},
                    },
                    **_problems(400, 401, 403, 404, 409, 413, 422, 503),
                },
            }
        },
        "/v1/admin/retention-defaults": _defaults_path(),
    }


def _defaults_path() -> dict[str, Any]:
    """``GET /v1/admin/retention-defaults``."""
    nullable = {"type": ["number", "integer", "null"]}
    rules = {
        "type": "object",
        "properties": {"max_age": nullable, "max_count": nullable, "truncate_before": nullable},
    }
    answer = {
        "type": "object",
        "properties": {
            "tenant": {"type": ["string", "null"]},
            "defaults": {"type": "object", "additionalProperties": rules},
        },
        "required": ["tenant", "defaults"],
    }
    return {
        "get": {
            "summary": "The retention defaults the scavenger applies, in the caller's tenant",
            "description": "Keys: a domain (every tenant's streams), tenant:domain and tenant:* "
            "(that tenant's, before the domain's). A tenant-scoped credential sees its own "
            "tenant's keys and the domain-wide ones; an operator every key. Needs the read "
            "right.",
            "responses": {
                "200": {
                    "description": "the defaults by key",
                    "content": {"application/json": {"schema": answer}},
                },
                **_problems(401, 403, 503),
            },
        }
    }
