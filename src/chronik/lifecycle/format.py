"""The export file: JSON lines, a versioned header, one line per event in global order, an end.

Line 1 is the header, ``{"chronik_export": 1, "source": "sqlite", "exported_at": ...,
"head": "42", "after": null}``: the format version (a reader refuses a newer one), the kind of
store it came from, when, the source's head when the export started (nothing after it is in
the file) and the ``--after`` position of an incremental export. Then one line per event:
``event_id``, ``tenant``, ``domain``, ``aggregate_id``, ``sequence``, ``type``,
``schema_version``, ``content_type``, ``payload``, ``metadata``, ``tags``, ``recorded_at`` and
the source ``position`` (a string: positions differ between stores). A JSON payload is the
JSON itself, byte for byte as stored; any other content type (or a JSON payload that cannot
sit on one line as it is) is base64 text, in ``payload`` for a non-JSON content type and in
``payload_base64`` for JSON. The last line, ``{"chronik_export_end": {"events": N}}``, tells a
complete file from a cut one. Readers ignore keys they do not know, so later versions may add
some (tenants, archives, key ids) without breaking older readers of the same version.

Version 2 adds, between the last event and the end line, one line per stream with retention
rules of its own (``chronik.store.retention``): ``{"chronik_retention": {"tenant": "",
"domain": ..., "aggregate_id": ..., "max_age": ..., "max_count": ..., "truncate_before": ...}}``
(absent rules left out). A version 1 file (no such lines) still imports.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Final

import msgspec

from chronik.errors import ImportConflict, InvalidExport, ValidationError
from chronik.messages import JSON, EventData, Position, RecordedEvent, StreamId
from chronik.store.retention import Retention, check_retention

__all__ = [
    "END_KEY",
    "FORMAT_VERSION",
    "RETENTION_KEY",
    "EndLine",
    "EventLine",
    "Header",
    "ImportConflict",
    "RetentionLine",
    "InvalidExport",
    "decode_end",
    "decode_event",
    "decode_header",
    "decode_retention",
    "encode_end",
    "encode_event",
    "encode_header",
    "encode_retention",
    "event_data",
    "is_end",
    "is_retention",
]

#: The version of the export format this chronik writes and the newest it reads.
FORMAT_VERSION: Final = 2
END_KEY: Final = "chronik_export_end"
RETENTION_KEY: Final = "chronik_retention"
_NONE: Final = msgspec.Raw()
_WHITESPACE: Final = b" \t\r\n"


class Header(msgspec.Struct, omit_defaults=False):
    """Line 1 of an export."""

    chronik_export: int
    source: str
    exported_at: str
    head: str | None = None
    after: str | None = None


class EventLine(msgspec.Struct, omit_defaults=True):
    """One event of an export, as written on its line."""

    event_id: str
    domain: str
    aggregate_id: str
    sequence: int
    type: str
    position: str
    tenant: str = ""
    schema_version: int = 1
    content_type: str = JSON
    payload: msgspec.Raw = _NONE  # empty: absent
    payload_base64: str | None = None
    metadata: msgspec.Raw = _NONE
    tags: list[str] = msgspec.field(default_factory=list)
    recorded_at: str | None = None


class EndInfo(msgspec.Struct):
    """What the end line says of the file."""

    events: int


class EndLine(msgspec.Struct):
    """The last line of a complete export."""

    chronik_export_end: EndInfo


class StreamRules(msgspec.Struct, omit_defaults=True):
    """A stream's own retention rules, as a retention line writes them."""

    domain: str
    aggregate_id: str
    tenant: str = ""
    max_age: float | None = None
    max_count: int | None = None
    truncate_before: int | None = None


class RetentionLine(msgspec.Struct):
    """A line of a stream's retention rules (format version 2)."""

    chronik_retention: StreamRules


_encoder: Final = msgspec.json.Encoder()
_header_decoder: Final = msgspec.json.Decoder(Header)
_event_decoder: Final = msgspec.json.Decoder(EventLine)
_end_decoder: Final = msgspec.json.Decoder(EndLine)
_retention_decoder: Final = msgspec.json.Decoder(RetentionLine)
_metadata_decoder: Final = msgspec.json.Decoder(dict[str, str])
_any_decoder: Final = msgspec.json.Decoder()
_EMPTY: Final = msgspec.Raw(b"{}")


def encode_header(source: str, head: Position | None, after: Position | None) -> bytes:
    """The header line (with its newline) of an export that starts now."""
    header = Header(
        FORMAT_VERSION,
        source,
        datetime.now(UTC).isoformat(),
        None if head is None else str(head),
        None if after is None else str(after),
    )
    return _encoder.encode(header) + b"\n"


def encode_end(events: int) -> bytes:
    """The end line of a complete export of ``events`` events."""
    return _encoder.encode(EndLine(EndInfo(events))) + b"\n"


def encode_retention(stream: StreamId, retention: Retention) -> bytes:
    """The retention line (with its newline) of ``stream``'s own rules."""
    rules = StreamRules(
        stream.domain,
        stream.aggregate_id,
        stream.tenant,
        retention.max_age,
        retention.max_count,
        retention.truncate_before,
    )
    return _encoder.encode(RetentionLine(rules)) + b"\n"


def is_retention(data: bytes) -> bool:
    """Whether a line is a retention line (as the exporter writes it: its key first)."""
    return data.lstrip()[: len(RETENTION_KEY) + 2] == b'{"' + RETENTION_KEY.encode()


def decode_retention(number: int, data: bytes) -> tuple[StreamId, Retention]:
    """A retention line's stream and rules, checked (InvalidExport naming the line)."""
    try:
        rules = _retention_decoder.decode(data).chronik_retention
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidExport(number, f"invalid retention line: {exc}", field=RETENTION_KEY) from None
    try:
        stream = StreamId(rules.domain, rules.aggregate_id, rules.tenant)
        retention = check_retention(rules.max_age, rules.max_count, rules.truncate_before)
    except ValidationError as exc:
        raise InvalidExport(number, str(exc), field=exc.field) from None
    return stream, retention


def _one_line_json(data: bytes) -> bool:
    """Whether ``data`` is JSON that can be written verbatim on a line and read back as is."""
    if not data or data[:1] in _WHITESPACE or data[-1:] in _WHITESPACE:
        return False
    if b"\n" in data or b"\r" in data:
        return False
    try:
        _any_decoder.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return False
    return True


def encode_event(event: RecordedEvent) -> bytes:
    """The line (with its newline) of one event."""
    payload = _NONE
    payload_b64: str | None = None
    if event.content_type == JSON and _one_line_json(event.payload):
        payload = msgspec.Raw(event.payload)
    elif event.content_type == JSON:
        payload_b64 = base64.b64encode(event.payload).decode()
    else:
        payload = msgspec.Raw(_encoder.encode(base64.b64encode(event.payload).decode()))
    raw_meta = event.raw_metadata
    if not raw_meta:
        metadata = _EMPTY
    elif b"\n" in raw_meta or b"\r" in raw_meta:
        metadata = msgspec.Raw(_encoder.encode(event.metadata.to_dict()))
    else:
        metadata = msgspec.Raw(raw_meta)
    stream = event.stream
    line = EventLine(
        event.event_id,
        stream.domain,
        stream.aggregate_id,
        event.sequence,
        event.type,
        str(event.position),
        stream.tenant,
        event.schema_version,
        event.content_type,
        payload,
        payload_b64,
        metadata,
        list(event.tags),
        event.recorded_at.isoformat(),
    )
    return _encoder.encode(line) + b"\n"


def decode_header(data: bytes) -> Header:
    """Line 1: the header, checked (InvalidExport naming line 1)."""
    try:
        header = _header_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidExport(1, f"not a chronik export header: {exc}", field="header") from None
    except msgspec.DecodeError:
        raise InvalidExport(1, "not a chronik export: the first line is not JSON") from None
    if header.chronik_export < 1:
        raise InvalidExport(1, "invalid export format version", field="chronik_export")
    if header.chronik_export > FORMAT_VERSION:
        raise InvalidExport(
            1,
            f"export format version {header.chronik_export} is newer than this chronik reads "
            f"({FORMAT_VERSION}): upgrade chronik to import it",
            field="chronik_export",
        )
    return header


def is_end(data: bytes) -> bool:
    """Whether a line is the end line (as the exporter writes it: its key first)."""
    return data.lstrip()[: len(END_KEY) + 2] == b'{"' + END_KEY.encode()


def decode_end(number: int, data: bytes) -> EndLine:
    """The end line, checked (InvalidExport naming the line)."""
    try:
        return _end_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidExport(number, f"invalid end line: {exc}", field=END_KEY) from None


def decode_event(number: int, data: bytes) -> EventLine:
    """An event line, checked for shape (InvalidExport naming the line and the key)."""
    try:
        return _event_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidExport(number, f"invalid event line: {exc}", field=_field(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidExport(number, f"not JSON: {exc}") from None


def _field(exc: msgspec.ValidationError) -> str | None:
    """The key a msgspec validation error is about."""
    text = str(exc)
    if "missing required field `" in text:
        return text.rpartition("field `")[2].split("`")[0]
    if "at `$." in text:
        return text.rpartition("at `$.")[2].split("`")[0].split("[")[0].split(".")[0]
    return None


def event_data(number: int, line: EventLine) -> tuple[StreamId, EventData]:
    """The stream and the EventData of an event line (InvalidExport naming the line)."""
    try:
        stream = StreamId(line.domain, line.aggregate_id, line.tenant)
    except ValidationError as exc:
        raise InvalidExport(number, str(exc), field=exc.field) from None
    if line.sequence < 0:
        raise InvalidExport(number, f"invalid sequence {line.sequence}", field="sequence")
    payload = _payload(number, line)
    metadata: dict[str, str] | None = None
    if line.metadata:
        try:
            metadata = _metadata_decoder.decode(line.metadata)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidExport(number, f"invalid metadata: {exc}", field="metadata") from None
    event = EventData(
        line.type,
        payload,
        metadata or None,
        line.event_id,
        line.schema_version,
        line.content_type,
        tuple(line.tags),
    )
    return stream, event


def _payload(number: int, line: EventLine) -> bytes:
    """The stored payload bytes of an event line."""
    try:
        if line.payload_base64 is not None:
            return base64.b64decode(line.payload_base64, validate=True)
        if not line.payload:
            raise InvalidExport(number, "the event has no payload", field="payload")
        if line.content_type == JSON:
            return bytes(line.payload)
        text = _any_decoder.decode(line.payload)
        if not isinstance(text, str):
            raise InvalidExport(
                number, "a payload of another content type must be base64 text", field="payload"
            )
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        if isinstance(exc, InvalidExport):
            raise
        raise InvalidExport(number, f"invalid base64 payload: {exc}", field="payload") from None
