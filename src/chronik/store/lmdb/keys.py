"""The LMDB store's keys and values: how each named sub-database lays out its bytes.

Keys sort bytewise, so every number in a key is big-endian and fixed-width (8 bytes): a cursor
walks the log in position order and a stream in sequence order. Text in a key ends with a NUL
(no name chronik accepts holds one), so one name is never a prefix of another's keys; text that
would not fit LMDB's 511-byte key limit (a 256-character aggregate id in four-byte UTF-8 ...)
is replaced by ``0xff`` and its 32-byte BLAKE2b digest (``0xff`` never starts UTF-8).

Values are msgpack arrays (``msgspec``); payloads, metadata and snapshot states go in as the
same bytes the other adapters store.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

import lmdb
import msgspec

from chronik.errors import StoreUnavailable
from chronik.messages import JSON, Checkpoint, Position, Snapshot, StreamId
from chronik.store.records import PreparedEvent

__all__ = [
    "DATABASES",
    "Dbs",
    "Txn",
    "fetch",
    "checkpoint_key",
    "checkpoint_of",
    "checkpoint_value",
    "decode",
    "encode",
    "event_record",
    "name_key",
    "num",
    "row_key",
    "snapshot_value",
    "stream_key",
    "stream_value",
    "tag_key",
    "type_key",
    "unnum",
    "unpack_stream",
]

#: The named sub-databases, opened at start (LMDB's max_dbs is fixed when it opens).
DATABASES: Final = (
    "meta",  # b"format" -> format version
    "log",  # position -> event record (event_record)
    "streams",  # stream_key -> (stream number, version)
    "stream_nums",  # stream number -> [domain, aggregate_id, tenant]
    "stream_events",  # stream number + sequence -> position
    "event_ids",  # event id -> position
    "tags",  # tag_key + position -> b""
    "types",  # type_key + position -> b""
    "snapshots",  # stream_key -> [sequence, type, schema_version, state, taken_at]
    "checkpoints",  # checkpoint_key -> [commit, index, epoch, updated_at]
    "tables",  # table name -> [columns, primary key, indexes]
    "rows",  # row_key -> [values in column order] (read-model tables)
    "leases",  # row_key of chronik_leases
    "outbox",  # row_key of outbox_messages
)
Dbs: TypeAlias = Mapping[str, "lmdb._Database"]
Txn: TypeAlias = "lmdb.Transaction[bytes]"  # buffers=False: keys and values are bytes
_MAX_TEXT: Final = 400  # bytes of text kept as they are in a key
_U64: Final = struct.Struct(">Q")
_STREAM: Final = struct.Struct(">Qq")

encode: Final = msgspec.msgpack.Encoder().encode
decode: Final = msgspec.msgpack.Decoder().decode
num: Final = _U64.pack
stream_value: Final = _STREAM.pack  # (stream number, version)
unpack_stream: Final = _STREAM.unpack


def fetch(txn: Txn, key: bytes, db: lmdb._Database) -> bytes:
    """The value an index points to; StoreUnavailable if it is missing (a damaged store)."""
    value = txn.get(key, db=db)
    if value is None:
        raise StoreUnavailable(f"the store is damaged: an index names the missing key {key!r}")
    return value


def unnum(key: bytes, offset: int = 0) -> int:
    """The big-endian number at ``offset`` of ``key``."""
    return int(_U64.unpack_from(key, offset)[0])


def name_key(text: str) -> bytes:
    """``text`` as a key prefix: its UTF-8 and a NUL, or ``0xff`` + digest + NUL when long."""
    raw = text.encode()
    if len(raw) <= _MAX_TEXT:
        return raw + b"\x00"
    return b"\xff" + hashlib.blake2b(raw, digest_size=32).digest() + b"\x00"


def stream_key(stream: StreamId) -> bytes:
    """The key of a stream (tenant, domain and aggregate id; none holds a NUL)."""
    return name_key(f"{stream.tenant}\x00{stream.domain}\x00{stream.aggregate_id}")


def tag_key(tag: str) -> bytes:
    """The prefix of a tag's index entries (a position follows)."""
    return name_key(tag)


def type_key(etype: str) -> bytes:
    """The prefix of an event type's index entries (a position follows)."""
    return name_key(etype)


def checkpoint_key(name: str, partition: int) -> bytes:
    return name_key(name) + partition.to_bytes(4, "big")


def row_key(table: str, pk: tuple[Any, ...]) -> bytes:
    """The key of a read-model row: the table and the encoded primary key values."""
    packed = encode(pk)
    if len(packed) > _MAX_TEXT:
        packed = b"\xff" + hashlib.blake2b(packed, digest_size=32).digest()
    return name_key(table) + packed


def event_record(e: PreparedEvent, stream_no: int, sequence: int, recorded_at: int) -> bytes:
    """The log value of one event (read back by ``chronik.store.lmdb.read``)."""
    return encode(
        (
            e.event_id,
            stream_no,
            sequence,
            e.type,
            e.schema_version,
            e.payload,
            e.metadata,
            None if e.content_type == JSON else e.content_type,
            recorded_at,
            e.tags or None,
        )
    )


def snapshot_value(snap: Snapshot) -> bytes:
    return encode((snap.sequence, snap.type, snap.schema_version, snap.state, snap.taken_at_us))


def checkpoint_value(cp: Checkpoint, now: int) -> bytes:
    return encode((cp.position.commit, cp.position.index, cp.epoch, now))


def checkpoint_of(name: str, partition: int, value: bytes) -> Checkpoint:
    commit, index, epoch, updated = decode(value)
    return Checkpoint(name, partition, Position(commit, index), epoch, updated)
