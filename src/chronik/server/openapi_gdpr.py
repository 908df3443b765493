"""The OpenAPI paths of the personal-data endpoints (``chronik.server.http_gdpr``).

Plain data merged into the document by ``chronik.server.openapi``; imports nothing of it.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["gdpr_paths"]

_SUBJECT: Final = {"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f]{1,256}$"}
_REASON: Final = {"type": "string", "maxLength": 1024}
_WRITES: Final = (
    "Admin write: with auth configured it needs the admin right; without auth it is refused "
    "(403 AdminWritesDisabled) unless the server enables admin writes (http.admin_writes). "
)


def _problems(*codes: int) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Problem"}
    content = {"application/problem+json": {"schema": schema}}
    return {str(c): {"description": "a problem", "content": content} for c in codes}


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "ok", "content": {"application/json": {"schema": schema}}}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def gdpr_paths() -> dict[str, Any]:
    """``/v1/admin/gdpr/...`` and ``/v1/events/{event_id}/redact``."""
    canaries = {"type": "array", "maxItems": 32, "items": {"type": "string", "minLength": 4}}
    tables = {"type": "array", "maxItems": 32, "items": {"type": "string", "minLength": 1}}
    return {
        "/v1/admin/gdpr/forget": {
            "post": {
                "summary": "Forget a personal-data subject (crypto-shredding), audited",
                "description": _WRITES
                + "Deletes the subject's key; the audit event chronik.subject_forgotten names "
                "the authenticated principal, the reason and the time.",
                "requestBody": _body({"subject": _SUBJECT, "reason": _REASON}, ["subject"]),
                "responses": {"200": _ok({"type": "object"}), **_problems(400, 401, 403)},
            }
        },
        "/v1/admin/gdpr/verify": {
            "post": {
                "summary": "Search every table, snapshot and event for a subject's plaintext",
                "description": "Read right. `canaries` are values the subject is known to have "
                "had; each hit says where it was found.",
                "requestBody": _body(
                    {"subject": _SUBJECT, "canaries": canaries, "tables": tables}, ["subject"]
                ),
                "responses": {"200": _ok({"type": "object"}), **_problems(400, 401, 403)},
            }
        },
        "/v1/admin/gdpr/forgotten": {
            "get": {
                "summary": "The forgotten subjects, most recent first",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    }
                ],
                "responses": {"200": _ok({"type": "array"}), **_problems(400, 401, 403)},
            }
        },
        "/v1/events/{event_id}/redact": {
            "post": {
                "summary": "Redact one event: its payload replaced by the redaction marker",
                "description": _WRITES
                + "Type, ids, stream, sequence and position are kept; the stream's snapshot "
                "is dropped; the audit event chronik.event_redacted records who, why and a "
                "SHA-256 of the old payload.",
                "parameters": [
                    {
                        "name": "event_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                    }
                ],
                "requestBody": _body(
                    {"reason": {**_REASON, "minLength": 1, "pattern": "\\S"}}, ["reason"]
                ),
                "responses": {"200": _ok({"type": "object"}), **_problems(400, 401, 403, 404)},
            }
        },
    }
