"""What decoding a redacted event gives: ``Redacted`` (its ids and place kept, no payload).

An operator may redact one event (``chronik events redact``, ``chronik.lifecycle.redact``): its
payload is replaced by the redaction marker and its content type becomes
``chronik.messages.REDACTED``; type, ids, stream, sequence and position stay. The registry's
``decode`` then answers a ``Redacted`` instead of the event class, never an error, and no
upcaster runs on it. Aggregates skip it (no ``@apply`` method takes it: the state change the
event made is lost, the version still counts it); a decider's ``evolve`` receives it and should
return the state unchanged, as for any event it does not know.

Imports: nothing of chronik (``chronik.codec`` imports it).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = ["MARKER", "PLACEHOLDER", "Redacted", "redacted_of"]

#: the key of the marker payload a redacted event carries: ``{"$redacted": {...}}``
MARKER: Final = "$redacted"
#: what a read model shows for a redacted value (the documented placeholder)
PLACEHOLDER: Final = "[redacted]"


class Redacted(msgspec.Struct, frozen=True):
    """A redacted event as decoded: its type and ids, and the marker (when, a hash of why)."""

    event_id: str
    type: str
    stream: str
    sequence: int
    marker: dict[str, Any] = msgspec.field(default_factory=dict)


_dict = msgspec.json.Decoder(dict[str, Any])


def redacted_of(event: Any) -> Redacted:
    """What a redacted ``RecordedEvent`` decodes to (the marker's details when readable)."""
    try:
        marker = _dict.decode(event.payload).get(MARKER)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        marker = None
    details = marker if isinstance(marker, dict) else {}
    return Redacted(event.event_id, event.type, str(event.stream), event.sequence, details)
