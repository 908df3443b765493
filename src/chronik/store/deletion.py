"""Soft and hard deletes of a stream: the deletion event, and what a reader learns from it.

``EventStore.delete_stream`` (or ``tx.delete_stream`` in a unit of work) appends one event of
type ``chronik.stream_deleted`` to the stream itself, with the caller's expectation, and in the
same transaction moves the stream's ``truncate_before`` past that event:

- soft (``hard=False``): the stream reads empty (``stream_version`` is None, ``read_stream``
  yields nothing) and a new append starts it again; sequence numbers continue after the
  deletion event (as in KurrentDB), so positions, snapshots and the idempotency answers of
  event ids already used stay unambiguous;
- hard (``hard=True``): the stream is also tombstoned; every later append (a retry of an old
  one included) and every read of it raises ``StreamDeleted``, for good.

The deleted events stay in the log (``read_all``, subscriptions) until the scavenger removes
them physically; the deletion event itself is delivered in log order after them, to the same
projection partition (it belongs to the same stream), so a projection drops its rows with an
ordinary handler: ``@projection.on(STREAM_DELETED)`` (see ``deletion_of``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from chronik.errors import ValidationError
from chronik.ids import new_event_id
from chronik.messages import EventData, Expected, Position, RecordedEvent, StreamId
from chronik.store.records import AppendRequest
from chronik.store.validation import prepare_append

__all__ = ["STREAM_DELETED", "StreamDeletion", "deletion_event", "deletion_of", "prepare_delete"]

#: The type of the event a delete appends to the stream it deletes.
STREAM_DELETED: Final = "chronik.stream_deleted"


class StreamDeletion(msgspec.Struct, frozen=True):
    """What a ``chronik.stream_deleted`` event says: every event of ``stream`` with a sequence
    below ``before`` (the deletion event's own) is deleted; ``hard``: the stream is tombstoned."""

    stream: StreamId
    hard: bool
    before: int
    position: Position


class _Payload(msgspec.Struct, frozen=True):
    hard: bool


_decode = msgspec.json.Decoder(_Payload).decode


def deletion_event(
    hard: bool, event_id: str | None = None, metadata: Mapping[str, str] | None = None
) -> EventData:
    """The event a delete appends (``event_id``: reuse it to retry a delete idempotently)."""
    if type(hard) is not bool:
        raise ValidationError(f"hard must be a bool, got {hard!r}", field="hard")
    return EventData(
        STREAM_DELETED,
        {"hard": hard},
        metadata=metadata,
        event_id=new_event_id() if event_id is None else event_id,
    )


def prepare_delete(
    stream: StreamId,
    expected: Expected,
    hard: bool,
    event_id: str | None,
    metadata: Mapping[str, str] | None,
    max_payload_bytes: int,
) -> AppendRequest:
    """The append of a delete, validated (a ValidationError subclass naming the field)."""
    event = deletion_event(hard, event_id, metadata)
    return prepare_append(stream, [event], expected, max_payload_bytes, 1)


def deletion_of(event: RecordedEvent) -> StreamDeletion | None:
    """The deletion ``event`` records, or None when it is not a deletion event."""
    if event.type != STREAM_DELETED:
        return None
    try:
        hard = _decode(event.payload).hard
    except msgspec.DecodeError:
        return None
    return StreamDeletion(event.stream, hard, event.sequence, event.position)
