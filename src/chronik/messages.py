"""The core value types: streams, positions, events, metadata, event ids (made in chronik.ids),
and the naming rules (``DOMAIN_RE``, ``TENANT_RE``, ``TYPE_NAME_RE``) every module checks names by.
"""

from __future__ import annotations

import base64
import enum
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

import msgspec

from chronik.errors import InvalidStreamId, ValidationError
from chronik.ids import new_event_id

__all__ = [
    "ANY",
    "DOMAIN_RE",
    "JSON",
    "NO_STREAM",
    "STREAM_EXISTS",
    "TENANT_RE",
    "TYPE_NAME_RE",
    "AppendResult",
    "Checkpoint",
    "Command",
    "EventData",
    "Expected",
    "ExpectedState",
    "Metadata",
    "Position",
    "RecordedEvent",
    "Snapshot",
    "StreamId",
    "StreamInfo",
    "new_event_id",
]

JSON: Final = "application/json"
REDACTED: Final = "application/vnd.chronik.redacted+json"  # a redacted event (lifecycle.redact)

#: the naming rules, one definition each: a domain, a tenant, an event or command type name
DOMAIN_RE: Final = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
TENANT_RE: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
TYPE_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,127}")
MAX_AGGREGATE_ID = 256
_POSITION_MAX: Final = 2**63 - 1  # int64: SQLite rowids, PostgreSQL bigint/xid8 columns

# --- streams and positions --------------------------------------------------------------------


class StreamId(msgspec.Struct, frozen=True, order=True):
    """A stream: one aggregate instance of a domain, optionally within a tenant."""

    domain: str
    aggregate_id: str
    tenant: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.domain, str) or not DOMAIN_RE.fullmatch(self.domain):
            raise InvalidStreamId(
                f"invalid domain {self.domain!r}: expected [a-z][a-z0-9_.-]{{0,63}}",
                field="domain",
            )
        aid = self.aggregate_id
        if (
            not isinstance(aid, str)
            or not 0 < len(aid) <= MAX_AGGREGATE_ID
            or not aid.isprintable()
        ):
            raise InvalidStreamId(
                f"invalid aggregate id {aid!r}: "
                f"expected 1..{MAX_AGGREGATE_ID} printable characters",
                field="aggregate_id",
            )
        if self.tenant and (
            not isinstance(self.tenant, str) or not TENANT_RE.fullmatch(self.tenant)
        ):
            raise InvalidStreamId(
                f"invalid tenant {self.tenant!r}: expected [a-z0-9][a-z0-9_.-]{{0,63}}",
                field="tenant",
            )

    @classmethod
    def parse(cls, text: str) -> StreamId:
        """Parse ``domain/aggregate_id`` or ``tenant:domain/aggregate_id``."""
        tenant = ""
        head, sep, aggregate_id = text.partition("/")
        if not sep:
            raise InvalidStreamId(f"invalid stream {text!r}: expected DOMAIN/AGGREGATE_ID")
        if ":" in head:
            tenant, _, head = head.partition(":")
        return cls(head, aggregate_id, tenant)

    def __str__(self) -> str:
        base = f"{self.domain}/{self.aggregate_id}"
        return f"{self.tenant}:{base}" if self.tenant else base


class Position(msgspec.Struct, frozen=True, order=True, gc=False):
    """A place in the store's global order; compare positions with ``<``.

    Opaque to callers: ``str(position)`` and ``Position.parse`` round-trip it. SQLite and memory
    use ``commit`` alone (the row id); PostgreSQL uses (transaction id, row id). Two ints:
    never in a reference cycle, so not tracked by the garbage collector (``gc=False``)."""

    commit: int
    index: int = 0

    @classmethod
    def parse(cls, text: str, field: str = "position") -> Position:
        """The position written as ``str(position)``: ``N`` or ``N:M``, decimal digits only,
        each part 0..2**63-1 (what every store can hold); ValidationError naming ``field``."""
        if isinstance(text, str) and len(text) <= 41:
            a, sep, b = text.partition(":")
            if a.isascii() and a.isdigit() and (not sep or (b.isascii() and b.isdigit())):
                commit, index = int(a), int(b) if sep else 0
                if commit <= _POSITION_MAX and index <= _POSITION_MAX:
                    return cls(commit, index)
                raise ValidationError(
                    f"invalid {field} {text!r}: each part must be at most {_POSITION_MAX}",
                    field=field,
                )
        shown = repr(text) if not isinstance(text, str) or len(text) <= 64 else "(too long)"
        raise ValidationError(
            f"invalid {field} {shown}: expected a position such as 42 or 42:7", field=field
        )

    def __str__(self) -> str:
        return f"{self.commit}:{self.index}" if self.index else str(self.commit)


class ExpectedState(enum.Enum):
    """What a writer expects of a stream, besides an exact last sequence."""

    ANY = "any"
    NO_STREAM = "no_stream"
    STREAM_EXISTS = "stream_exists"

    def __str__(self) -> str:
        return self.name


ANY: Final = ExpectedState.ANY
NO_STREAM: Final = ExpectedState.NO_STREAM
STREAM_EXISTS: Final = ExpectedState.STREAM_EXISTS
Expected: TypeAlias = ExpectedState | int

# --- metadata ---------------------------------------------------------------------------------


class Metadata(Mapping[str, str]):
    """Immutable string-to-string metadata; ``correlation_id`` and ``causation_id`` are named."""

    __slots__ = ("_data",)
    _data: dict[str, str]

    def __init__(self, data: Mapping[str, str] | None = None, /, **kwargs: str | None) -> None:
        merged: dict[str, str] = {}
        for source in (data or {}, kwargs):
            for key, value in source.items():
                if value is None:
                    continue
                if not isinstance(key, str) or not isinstance(value, str):
                    raise ValidationError(
                        f"metadata must map strings to strings, got {key!r}: {value!r}",
                        field="metadata",
                    )
                merged[key] = value
        object.__setattr__(self, "_data", merged)

    @classmethod
    def of(cls, value: Metadata | Mapping[str, str] | None) -> Metadata:
        """Coerce a mapping (or None) to Metadata."""
        if isinstance(value, Metadata):
            return value
        if value is None:
            return EMPTY_METADATA
        if not isinstance(value, Mapping):
            raise ValidationError(f"metadata must be a mapping, got {value!r}", field="metadata")
        return cls(value)

    @property
    def correlation_id(self) -> str | None:
        """The id shared by every message of one business flow."""
        return self._data.get("correlation_id")

    @property
    def causation_id(self) -> str | None:
        """The id of the message that caused this one."""
        return self._data.get("causation_id")

    @classmethod
    def caused_by(cls, event: RecordedEvent, metadata: Mapping[str, str] | None = None) -> Metadata:
        """The metadata of a command an event caused (by a saga, reaction or deadline): the
        command's own ``metadata`` with correlation = the event's correlation id (its event id
        when it has none) and causation = the event id."""
        return cls.of(metadata).with_values(
            correlation_id=event.metadata.correlation_id or event.event_id,
            causation_id=event.event_id,
        )

    def of_command(self, command_id: str) -> Metadata:
        """The metadata of the events a command appends: this (the command's) metadata with
        correlation = its correlation id (the command id when it has none) and causation = the
        command id."""
        return self.with_values(
            correlation_id=self.correlation_id or command_id, causation_id=command_id
        )

    def with_values(self, **values: str | None) -> Metadata:
        """A copy with keys added or replaced."""
        return Metadata(self._data, **values)

    def to_dict(self) -> dict[str, str]:
        """A plain dict copy."""
        return dict(self._data)

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Metadata is immutable")

    def __repr__(self) -> str:
        return f"Metadata({self._data!r})"

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data.items())))


EMPTY_METADATA: Final = Metadata()
_metadata_decoder = msgspec.json.Decoder(dict[str, str])
_json_decode: Final = msgspec.json.Decoder().decode  # RecordedEvent.json, one per event read

# --- events -----------------------------------------------------------------------------------


class EventData(msgspec.Struct):
    """An event a caller appends. ``payload`` is any JSON-encodable value (dict, dataclass,
    msgspec Struct) or ``bytes`` stored as they are, with ``content_type`` (default JSON; use
    another type for encrypted or compressed payloads). ``event_id`` defaults to a new UUIDv7
    when the object is made, so appending the same EventData again after an unknown outcome is
    idempotent. ``tags`` (``course:c1``) make any event findable by a ``chronik.Query``.
    """

    type: str
    payload: Any = msgspec.field(default_factory=dict)
    metadata: Metadata | Mapping[str, str] | None = None
    event_id: str = msgspec.field(default_factory=new_event_id)
    schema_version: int = 1
    content_type: str = JSON
    tags: list[str] | tuple[str, ...] = ()


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as stored: its stream, gapless sequence, global position and payload bytes.

    Never part of a reference cycle (str, int, bytes, untracked structs): ``gc=False``."""

    event_id: str
    stream: StreamId
    sequence: int
    type: str
    schema_version: int
    payload: bytes
    position: Position
    recorded_at_us: int
    raw_metadata: bytes | None = None
    content_type: str = JSON
    tags: tuple[str, ...] = ()  # sorted (EventData.tags)

    @property
    def metadata(self) -> Metadata:
        """The event's metadata (decoded on access)."""
        if not self.raw_metadata:
            return EMPTY_METADATA
        return Metadata(_metadata_decoder.decode(self.raw_metadata))

    @property
    def recorded_at(self) -> datetime:
        """When the store recorded the event (UTC)."""
        return datetime.fromtimestamp(self.recorded_at_us / 1_000_000, UTC)

    def json(self) -> Any:
        """The payload decoded from JSON into builtins (dict, list, str, ...)."""
        return _json_decode(self.payload)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (payload decoded when it is JSON, else base64 text). A JSON payload
        that does not parse (stored before the value rule, or by another writer) is shown as
        base64 with ``payload_error`` saying why, so one bad event never breaks a listing."""
        error: str | None = None
        if self.content_type == JSON or self.content_type == REDACTED:
            try:
                payload: Any = self.json()
            except (msgspec.DecodeError, ValueError, RecursionError) as exc:
                payload, error = base64.b64encode(self.payload).decode(), f"not JSON: {exc}"
        else:
            payload = base64.b64encode(self.payload).decode()
        out = {
            "event_id": self.event_id,
            "stream": str(self.stream),
            "domain": self.stream.domain,
            "aggregate_id": self.stream.aggregate_id,
            "tenant": self.stream.tenant,
            "sequence": self.sequence,
            "type": self.type,
            "schema_version": self.schema_version,
            "payload": payload,
            "content_type": self.content_type,
            "metadata": dict(self.metadata),
            "recorded_at": self.recorded_at.isoformat(),
            "position": str(self.position),
            "tags": list(self.tags),
        }
        if error is not None:
            out["payload_error"] = error
        return out


class AppendResult(msgspec.Struct, frozen=True):
    """What one append stored: the sequences it took and the position of its last event.

    ``positions`` (one per event) and ``recorded_at_us`` are filled by adapters that know them
    without a read; they are empty / 0 otherwise (and on an idempotent retry).
    """

    stream: StreamId
    first_sequence: int
    last_sequence: int
    position: Position
    positions: tuple[Position, ...] = ()
    recorded_at_us: int = 0


class StreamInfo(msgspec.Struct, frozen=True):
    """A stream and its current last sequence."""

    stream: StreamId
    version: int


class Snapshot(msgspec.Struct, frozen=True):
    """A cached state of one stream after ``sequence``: derived data, safe to drop at any time.

    ``type`` names what the state is (an aggregate or decider), ``schema_version`` its shape, so
    a snapshot of an older shape is ignored and the stream replayed instead.
    """

    stream: StreamId
    sequence: int
    type: str
    schema_version: int
    state: bytes
    taken_at_us: int = 0


class Checkpoint(msgspec.Struct, frozen=True):
    """How far a processor (one partition of it) has got, and the lease epoch that wrote it."""

    name: str
    partition: int
    position: Position
    epoch: int = 0
    updated_at_us: int = 0


class Command(msgspec.Struct, kw_only=True):
    """A request to change one aggregate: routed by ``domain``, decided by its business logic.

    ``command_id`` makes dispatch idempotent: dispatching the same id again returns the first
    result and appends nothing (None: a new id is assigned, no duplicate check). The events it
    produces carry ``correlation_id`` from ``metadata`` (the command id if absent) and
    ``causation_id`` = the command id. ``expected_sequence`` makes the command valid only
    against that version of the aggregate (no retry on conflict).
    """

    domain: str
    aggregate_id: str
    type: str
    payload: Any = msgspec.field(default_factory=dict)
    command_id: str | None = None
    metadata: Metadata | Mapping[str, str] | None = None
    expected_sequence: int | None = None
    tenant: str = ""

    @property
    def stream(self) -> StreamId:
        """The stream of the aggregate this command addresses (validates the names)."""
        return StreamId(self.domain, self.aggregate_id, self.tenant)
