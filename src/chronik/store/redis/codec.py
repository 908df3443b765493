"""How the Redis store lays out its data: key names, stream keys, event records, table cells.

Every key of one store starts with its prefix (``chronik`` unless the URL says ``?prefix=``),
so several stores share a server. Under ``{prefix}:``

* ``seq`` the last global position (INCR in the write script), ``events`` a hash position ->
  event record, ``ids`` a hash event id -> position;
* ``s:{tenant}/{domain}/{aggregate id}`` a list of the stream's positions (index = sequence;
  neither tenant nor domain can hold ``/``, so the key is unambiguous), ``stream_seq`` and
  ``streams`` / ``streams:{domain}`` (sorted sets stream key by registration order, for
  ``list_streams``);
* ``type:{type}``, ``dom:{domain}``, ``tag:{tag}`` sorted sets of positions (score = member):
  the indexes of filtered reads and DCB queries;
* ``checkpoints``, ``snapshots`` hashes; ``tables`` / ``table_columns`` / ``table_keys``
  hashes table -> spec, ``" col col "``, ``"pk pk"``; ``t:{table}`` one hash per read-model
  table, field ``{column}\\0{row key}`` -> cell;
* ``changes`` the pub/sub channel the write script publishes on.

An event record is ``b"{sequence} {recorded_at_us} " + msgpack(body)``: the script prefixes
what it assigns to the body this module encodes. A cell is a tag byte and the value (``n``
NULL, ``i`` int, ``f`` float, ``s`` UTF-8 text, ``b`` bytes), so the Lua script compares and
writes cells without knowing their types; a row key is the primary key's cells, each
length-prefixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from chronik.messages import JSON, Position, RecordedEvent, Snapshot, StreamId
from chronik.store.records import PreparedEvent, TableSpec

__all__ = [
    "StreamCache",
    "decode_cell",
    "decode_event",
    "decode_snapshot",
    "decode_spec",
    "encode_body",
    "encode_cell",
    "encode_snapshot",
    "encode_spec",
    "row_key",
    "stream_key",
]

_Body = tuple[str, str, str, str, str, int, bytes, bytes | None, str, tuple[str, ...]]
_body_decoder: Final = msgspec.msgpack.Decoder(_Body)
_SpecData = tuple[list[tuple[str, str]], list[str], list[list[str]]]
_spec_decoder: Final = msgspec.msgpack.Decoder(_SpecData)
_snapshot_decoder: Final = msgspec.msgpack.Decoder(tuple[str, int, bytes, int])
_STREAM_CACHE_LIMIT: Final = 100_000


def stream_key(stream: StreamId) -> str:
    """The stream's part of its key: ``tenant/domain/aggregate id``."""
    return f"{stream.tenant}/{stream.domain}/{stream.aggregate_id}"


def encode_body(stream: StreamId, e: PreparedEvent) -> bytes:
    """The part of an event record the client encodes (the script adds sequence and time)."""
    return msgspec.msgpack.encode(
        (
            e.event_id,
            stream.tenant,
            stream.domain,
            stream.aggregate_id,
            e.type,
            e.schema_version,
            e.payload,
            e.metadata,
            e.content_type,
            e.tags,
        )
    )


class StreamCache:
    """StreamIds by their parts: an event page names few streams, built once each."""

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str, str], StreamId] = {}

    def get(self, tenant: str, domain: str, aggregate_id: str) -> StreamId:
        key = (tenant, domain, aggregate_id)
        stream = self._streams.get(key)
        if stream is None:
            if len(self._streams) > _STREAM_CACHE_LIMIT:
                self._streams.clear()
            stream = self._streams[key] = StreamId(domain, aggregate_id, tenant)
        return stream


def decode_event(
    position: bytes | int, record: bytes, streams: StreamCache
) -> tuple[RecordedEvent, PreparedEvent]:
    """The stored event at ``position`` and what was appended (for retries)."""
    seq, at, body = record.split(b" ", 2)
    eid, tenant, domain, agg, etype, version, payload, md, ct, tags = _body_decoder.decode(body)
    recorded = RecordedEvent(
        eid,
        streams.get(tenant, domain, agg),
        int(seq),
        etype,
        version,
        payload,
        Position(int(position)),
        int(at),
        md,
        ct or JSON,
        tags,
    )
    return recorded, PreparedEvent(eid, etype, version, payload, md, ct, tags)


def encode_snapshot(snap: Snapshot) -> bytes:
    """A snapshot record: ``b"{sequence} " + msgpack(type, schema version, state, time)``."""
    body = msgspec.msgpack.encode((snap.type, snap.schema_version, snap.state, snap.taken_at_us))
    return b"%d %s" % (snap.sequence, body)


def decode_snapshot(stream: StreamId, record: bytes) -> Snapshot:
    """The snapshot stored as ``record`` for ``stream``."""
    seq, body = record.split(b" ", 1)
    stype, version, state, taken_at = _snapshot_decoder.decode(body)
    return Snapshot(stream, int(seq), stype, version, state, taken_at)


# --- read-model tables ------------------------------------------------------------------------


def encode_cell(value: Any) -> bytes:
    """One cell (values were checked by ``chronik.store.tables.check_values``)."""
    if value is None:
        return b"n"
    if isinstance(value, bool):
        return b"i1" if value else b"i0"
    if isinstance(value, int):
        return b"i%d" % int(value)
    if isinstance(value, float):
        return b"f" + repr(float(value)).encode()
    if isinstance(value, str):
        return b"s" + str(value).encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return b"b" + bytes(value)
    raise TypeError(f"a value of type {type(value).__name__}")  # check_values refused it


def decode_cell(cell: bytes | None) -> Any:
    """The value of a stored cell (a missing one is NULL)."""
    if cell is None:
        return None
    tag, data = cell[:1], cell[1:]
    if tag == b"i":
        return int(data)
    if tag == b"s":
        return data.decode()
    if tag == b"f":
        return float(data)
    if tag == b"b":
        return data
    return None


def row_key(cells: Sequence[bytes]) -> bytes:
    """The row key of a row whose primary key cells are ``cells`` (the Lua script's too)."""
    return b"".join(b"%d:%s" % (len(c), c) for c in cells)


def encode_spec(spec: TableSpec) -> bytes:
    """A table spec as stored in ``{prefix}:tables``."""
    return msgspec.msgpack.encode(
        (list(spec.columns), list(spec.primary_key), [list(i) for i in spec.indexes])
    )


def decode_spec(name: str, data: bytes) -> TableSpec:
    """The spec stored for table ``name``."""
    columns, key, indexes = _spec_decoder.decode(data)
    return TableSpec(
        name,
        tuple((c, t) for c, t in columns),
        tuple(key),
        tuple(tuple(i) for i in indexes),
    )
