"""Redacting one event: its payload replaced in place by a marker, audited (who, why, a hash).

``redact_event`` rewrites the stored event (``EventStore.rewrite_event``: memory, SQLite and
PostgreSQL; other stores raise NotSupported) so its payload becomes the redaction marker
``{"$redacted": {"at": ..., "by": ..., "reason": ..., "payload_sha256": ...}}`` and its content
type ``chronik.messages.REDACTED``; type, ids, stream, sequence, position and record time stay.
The same transaction drops the stream's snapshot (it may hold the value). An archived copy
(``chronik.archive``, attached to the store) is rewritten the same way. Then the audit event
``chronik.event_redacted`` (who, why, which event, the SHA-256 of the old payload, never the
payload) goes to the stream ``chronik.redactions/<event id>``. Decoding the event gives
``chronik.personal.redacted.Redacted``; read models that showed the value are made clean by a
rebuild (the redacted event then reaches handlers with content type ``REDACTED``). On SQLite,
``compact_sqlite`` afterwards rewrites the file so no free page or WAL frame keeps old bytes.

Idempotent: redacting a redacted event changes nothing; if its audit event is missing (a crash
between the rewrite and the audit), it is written from the marker.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Final

import msgspec

from chronik.errors import NotFound, ValidationError
from chronik.lifecycle.archiver import rewrite_archived
from chronik.messages import REDACTED, EventData, StreamId
from chronik.personal.redacted import MARKER
from chronik.store.base import EventStore

__all__ = ["REDACTED_EVENT", "REDACTIONS_DOMAIN", "RedactReport", "redact_event"]

log = logging.getLogger("chronik.gdpr")
REDACTED_EVENT: Final = "chronik.event_redacted"
#: the domain of the audit streams, one per redacted event: ``chronik.redactions/<event id>``
REDACTIONS_DOMAIN: Final = "chronik.redactions"
MAX_REASON: Final = 1024
_marker = msgspec.json.Decoder(dict[str, Any])


class RedactReport(msgspec.Struct, frozen=True):
    """What ``redact_event`` did: the event (where it is), who, why, the old payload's hash,
    the audit event, and whether this call rewrote it (False: it was redacted before)."""

    event_id: str
    stream: str
    sequence: int
    type: str
    by: str
    reason: str
    payload_sha256: str
    audit_event_id: str
    rewritten: bool


def _check(by: object, reason: object) -> tuple[str, str]:
    if not isinstance(by, str) or not by.strip() or len(by) > 256:
        raise ValidationError("redacting an event needs who asks for it (1..256)", field="by")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise ValidationError(
            f"redacting an event needs a reason (1..{MAX_REASON} characters)", field="reason"
        )
    return by, reason


async def redact_event(store: EventStore, event_id: str, *, by: str, reason: str) -> RedactReport:
    """Replace ``event_id``'s payload by the redaction marker and audit it. NotFound for an
    unknown event; ValidationError for chronik's own (audit) events or a missing who / why."""
    by, reason = _check(by, reason)
    event = await store.get_event(event_id)
    if event is None:
        raise NotFound(f"no event {event_id!r} in the store")
    if event.stream.domain.startswith("chronik."):
        raise ValidationError(
            f"{event.type} is one of chronik's own records (an audit trail): never redacted",
            field="event_id",
        )
    audit_stream = StreamId(REDACTIONS_DOMAIN, event_id, event.stream.tenant)
    rewritten = event.content_type != REDACTED
    if rewritten:
        details = {
            "at": time.time_ns() // 1000,
            "by": by,
            "reason": reason,
            "payload_sha256": hashlib.sha256(event.payload).hexdigest(),
        }
        payload = msgspec.json.encode({MARKER: details})
        hot = await store.rewrite_event(event_id, payload, REDACTED)
        if not await rewrite_archived(store, event, payload, REDACTED) and hot is None:
            raise NotFound(f"no event {event_id!r} in the store")
    else:
        details = _marker.decode(event.payload).get(MARKER) or {}
        if await store.stream_version(audit_stream) is not None:
            audits = [e async for e in store.read_stream(audit_stream)]
            return _report(event, details, audits[-1].event_id, rewritten=False)
    audit = EventData(
        REDACTED_EVENT,
        {
            "event_id": event_id,
            "stream": str(event.stream),
            "sequence": event.sequence,
            "type": event.type,
            "by": details.get("by", by),
            "reason": details.get("reason", reason),
            "payload_sha256": details.get("payload_sha256", ""),
        },
        {"actor": str(details.get("by", by))},
    )
    await store.append(audit_stream, [audit])
    log.info(
        "redacted event %s of %s (by %s), audit event %s",
        event_id,
        event.stream,
        by,
        audit.event_id,
    )
    return _report(event, details, audit.event_id, rewritten=rewritten)


def _report(event: Any, details: dict[str, Any], audit_id: str, rewritten: bool) -> RedactReport:
    return RedactReport(
        event.event_id,
        str(event.stream),
        event.sequence,
        event.type,
        str(details.get("by", "")),
        str(details.get("reason", "")),
        str(details.get("payload_sha256", "")),
        audit_id,
        rewritten,
    )
