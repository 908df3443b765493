"""Input checks of the store port: every value a caller hands ``EventStore`` is checked here once.

Each check raises a ValidationError subclass naming the field, before anything reaches an
adapter; ``prepare_append`` also encodes the events (``PreparedEvent``) so adapters store bytes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from chronik.dcb import AppendCondition, Query, check_tags
from chronik.errors import (
    InvalidEventType,
    InvalidExpectedVersion,
    PayloadTooLarge,
    TooManyEvents,
    ValidationError,
)
from chronik.messages import (
    JSON,
    NO_STREAM,
    TYPE_NAME_RE,
    Checkpoint,
    EventData,
    Expected,
    ExpectedState,
    Metadata,
    Position,
    Snapshot,
    StreamId,
)
from chronik.store.records import (
    DEFAULT_MAX_SNAPSHOT_BYTES,
    AppendRequest,
    ConditionCheck,
    PreparedEvent,
)
from chronik.values import check_json_value, decode_json, encode_json

__all__ = [
    "check_checkpoint",
    "check_checkpoint_key",
    "check_event_id",
    "check_filters",
    "check_limit",
    "check_query",
    "check_snapshot",
    "prepare_append",
    "prepare_event",
    "prepare_events",
    "prepare_tagged",
]

_CONTENT_TYPE_RE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+(;.{0,64})?", re.I)
_CHECKPOINT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}")
_metadata_encoder: Final = msgspec.json.Encoder(order="sorted")  # canonical bytes, any source


def prepare_append(
    stream: StreamId,
    events: Iterable[EventData],
    expected: Expected,
    max_payload_bytes: int,
    max_append_events: int,
) -> AppendRequest:
    """Validate and encode one append; raises a ValidationError subclass on bad input."""
    if not isinstance(stream, StreamId):
        raise ValidationError(f"stream must be a StreamId, got {stream!r}", field="stream")
    if not isinstance(expected, ExpectedState) and (type(expected) is not int or expected < 0):
        raise InvalidExpectedVersion(
            f"expected must be ANY, NO_STREAM, STREAM_EXISTS or a sequence >= 0, got {expected!r}",
            field="expected",
        )
    return AppendRequest(
        stream, prepare_events(events, max_payload_bytes, max_append_events), expected
    )


#: event type names that passed TYPE_NAME_RE (most applications have a few dozen; bounded)
_BINARY: Final = (bytes, bytearray, memoryview)  # a tuple: ``A | B`` makes a union per call
_TYPE_NAMES: Final[set[str]] = set()
_MAX_TYPE_NAMES: Final = 4096


def _check_type_name(etype: object) -> None:
    """InvalidEventType unless ``etype`` is a valid type name; remember the ones that are."""
    if not isinstance(etype, str) or not TYPE_NAME_RE.fullmatch(etype):
        raise InvalidEventType(
            f"invalid event type {etype!r}: expected [A-Za-z][A-Za-z0-9_.:-]{{0,127}}",
            field="type",
        )
    if type(etype) is str and len(_TYPE_NAMES) < _MAX_TYPE_NAMES:
        _TYPE_NAMES.add(etype)


def prepare_events(
    events: Iterable[EventData], max_payload_bytes: int, max_append_events: int
) -> list[PreparedEvent]:
    """The events of one append validated and encoded: at least one, at most
    ``max_append_events``, no id twice."""
    if isinstance(events, EventData):
        raise ValidationError("events must be a list of EventData", field="events")
    prepared = [prepare_event(e, max_payload_bytes) for e in events]
    if not prepared:
        raise ValidationError("an append needs at least one event", field="events")
    if len(prepared) > max_append_events:
        raise TooManyEvents(len(prepared), max_append_events)
    if len(prepared) > 1 and len({p.event_id for p in prepared}) != len(prepared):
        raise ValidationError("the same event id appears twice in one append", field="events")
    return prepared


def prepare_event(event: EventData, max_payload_bytes: int) -> PreparedEvent:
    """One event validated (type, schema version, id, payload, metadata) and encoded."""
    if type(event) is not EventData:
        raise ValidationError(f"expected EventData, got {event!r}", field="events")
    etype = event.type
    if type(etype) is not str or etype not in _TYPE_NAMES:
        _check_type_name(etype)
    version = event.schema_version
    if type(version) is not int or not 1 <= version <= 1_000_000:
        raise ValidationError(
            f"schema_version must be an int >= 1, got {version!r}", field="schema_version"
        )
    event_id = event.event_id
    if type(event_id) is not str or not 0 < len(event_id) <= 64:
        check_event_id(event_id)  # raises the ValidationError (a str subclass passes)
    content_type = event.content_type
    payload = event.payload
    if type(payload) is dict or not isinstance(payload, _BINARY):
        if content_type != JSON:
            raise ValidationError(
                "content_type applies to bytes payloads only", field="content_type"
            )
        data = encode_json(payload, "payload")  # the value rule of chronik.codec
        if len(data) > max_payload_bytes:
            raise PayloadTooLarge(len(data), max_payload_bytes)
    else:
        data = bytes(payload)
        if len(data) > max_payload_bytes:  # before any parsing
            raise PayloadTooLarge(len(data), max_payload_bytes)
        if content_type == JSON:
            decode_json(data, "payload")  # the value rule of chronik.codec
        elif not isinstance(content_type, str) or not _CONTENT_TYPE_RE.fullmatch(content_type):
            raise ValidationError(f"invalid content type {content_type!r}", field="content_type")
    md = event.metadata
    if md is None or (isinstance(md, Metadata) and not md):
        meta = None
    else:
        fields = Metadata.of(md).to_dict()
        check_json_value(fields, "metadata")
        meta = _metadata_encoder.encode(fields) if fields else None
    tags = check_tags(event.tags) if event.tags else ()
    return PreparedEvent(event_id, etype, version, data, meta, content_type, tags)


def prepare_tagged(
    events: Iterable[EventData],
    condition: AppendCondition | None,
    domain: str,
    tenant: str,
    max_payload_bytes: int,
    max_append_events: int,
) -> tuple[list[AppendRequest], ConditionCheck | None]:
    """Validate and encode a tagged append (``EventStore.append_tagged``).

    Each event is stored as the first event of a stream of its own, ``(domain, event id)``:
    unrelated tagged appends then never contend on a stream, and positions, idempotency by
    event id, subscriptions and every reader work as for stream events.
    """
    if condition is not None and not isinstance(condition, AppendCondition):
        raise ValidationError(
            f"condition must be an AppendCondition or None, got {condition!r}", field="condition"
        )
    prepared = prepare_events(events, max_payload_bytes, max_append_events)
    requests = []
    for p in prepared:
        if not p.event_id.isprintable():
            raise ValidationError(
                f"invalid event id {p.event_id!r}: a tagged event's id names its stream, "
                "so it must be printable",
                field="event_id",
            )
        requests.append(AppendRequest(StreamId(domain, p.event_id, tenant), [p], NO_STREAM))
    if condition is None:
        return requests, None
    ids = tuple(p.event_id for p in prepared)
    return requests, ConditionCheck(condition.fail_if_events_match, condition.after, ids, tenant)


def check_query(query: object) -> Query:
    """``query`` if it is a ``chronik.Query``, else ValidationError naming it."""
    if not isinstance(query, Query):
        raise ValidationError(f"expected a chronik.Query, got {query!r}", field="query")
    return query


def check_event_id(event_id: object) -> str:
    """``event_id`` if it is a str of 1..64 characters, else ValidationError."""
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 64:
        raise ValidationError(f"invalid event id {event_id!r}", field="event_id")
    return event_id


def check_snapshot(snapshot: Snapshot) -> Snapshot:
    """Validate a snapshot (raises ValidationError) and stamp it with the time."""
    if not isinstance(snapshot, Snapshot) or not isinstance(snapshot.stream, StreamId):
        raise ValidationError(f"expected a Snapshot, got {snapshot!r}", field="snapshot")
    if type(snapshot.sequence) is not int or snapshot.sequence < 0:
        raise ValidationError(f"invalid snapshot sequence {snapshot.sequence!r}")
    if not isinstance(snapshot.type, str) or not TYPE_NAME_RE.fullmatch(snapshot.type):
        raise InvalidEventType(f"invalid snapshot type {snapshot.type!r}", field="type")
    if type(snapshot.schema_version) is not int or snapshot.schema_version < 1:
        raise ValidationError(
            f"invalid snapshot schema_version {snapshot.schema_version!r}",
            field="schema_version",
        )
    if not isinstance(snapshot.state, bytes):
        raise ValidationError("snapshot state must be bytes", field="state")
    if len(snapshot.state) > DEFAULT_MAX_SNAPSHOT_BYTES:
        raise PayloadTooLarge(len(snapshot.state), DEFAULT_MAX_SNAPSHOT_BYTES)
    return msgspec.structs.replace(snapshot, taken_at_us=time.time_ns() // 1000)


def check_checkpoint_key(name: str, partition: int) -> None:
    """ValidationError naming the field unless ``name`` / ``partition`` key a checkpoint."""
    if not isinstance(name, str) or not _CHECKPOINT_NAME_RE.fullmatch(name):
        raise ValidationError(f"invalid processor name {name!r}", field="name")
    if type(partition) is not int or not 0 <= partition < 65536:
        raise ValidationError(f"invalid partition {partition!r}", field="partition")


def check_checkpoint(name: str, position: Position, partition: int, epoch: int) -> Checkpoint:
    """The checkpoint a unit of work commits, its every field checked."""
    check_checkpoint_key(name, partition)
    if not isinstance(position, Position):
        raise ValidationError(f"expected a Position, got {position!r}", field="position")
    if type(epoch) is not int or epoch < 0:
        raise ValidationError(f"invalid epoch {epoch!r}", field="epoch")
    return Checkpoint(name, partition, position, epoch)


def check_limit(limit: int | None) -> None:
    """ValidationError naming ``limit`` unless it is None or an int >= 0."""
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValidationError(f"invalid limit {limit!r}", field="limit")


def check_filters(
    domains: Sequence[str] | None, types: Sequence[str] | None
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """The domain and type filters of a read as tuples (None: no filter)."""
    out: list[tuple[str, ...] | None] = []
    for name, values in (("domains", domains), ("types", types)):
        if values is None:
            out.append(None)
            continue
        if isinstance(values, str) or not all(isinstance(v, str) for v in values):
            raise ValidationError(f"{name} must be a list of strings", field=name)
        out.append(tuple(values))
    return out[0], out[1]
