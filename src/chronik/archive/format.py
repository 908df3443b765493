"""The archive's on-blob format: segments of compressed blocks, their indexes, the manifest.

A segment holds a contiguous run of the global log (in position order) in three blobs:

``segments/<name>.dat``
    blocks of ``block_events`` events (512 by default) back to back; each block is
    ``zlib(msgpack([streams, rows]))``: the block's distinct streams as [domain, aggregate id,
    tenant] and one array per event (stream number, event id, sequence, type, schema version,
    payload bytes, position commit and index, record time, raw metadata, content type, tags),
    every field of ``RecordedEvent`` kept as stored.
``segments/<name>.idx``
    the segment's index (``chronik.archive.index``): per block its byte range in ``.dat``,
    first and last position, event count and sha256; then stream key -> (first sequence, last
    sequence, block numbers), and domain, type and tag -> block numbers. A reader fetches this
    blob once (cached), then only the byte ranges of the blocks a read needs.
``segments/<name>.ids``
    ``zlib(msgpack({event_id: block number}))``, fetched only by ``get_event`` / rewrites.

``manifest.json`` is the commit point: ``{"sha256": <hex of manifest>, "manifest": {...}}``
with ``manifest`` = ``{"format": 1, "generation": n, "segments": [SegmentInfo, ...]}``; each
``SegmentInfo`` carries the size and sha256 of its three blobs. A segment name is
``<first commit>-<first index>-g<generation that committed it>`` (zero-padded), so a seal retried
after a crash overwrites its own orphans and a rewrite never overwrites a live blob.
"""

from __future__ import annotations

import hashlib
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from typing import Final

import msgspec

from chronik.archive.errors import ArchiveCorrupt
from chronik.archive.index import BlockRef, SegmentIndex, StreamEntry, encode_index
from chronik.archive.index import decode_index as _decode_index
from chronik.messages import Position, RecordedEvent, StreamId

__all__ = [
    "BLOCK_EVENTS",
    "MANIFEST",
    "Block",
    "Row",
    "BlockRef",
    "EncodedSegment",
    "Manifest",
    "SegmentIndex",
    "SegmentInfo",
    "StreamEntry",
    "blob_names",
    "decode_block",
    "decode_ids",
    "decode_index",
    "decode_manifest",
    "encode_blocks",
    "encode_manifest",
    "encode_segment",
    "inflate",
    "segment_name",
    "sha256",
    "stream_key",
]

BLOCK_EVENTS: Final = 512
MANIFEST: Final = "manifest.json"
FORMAT: Final = 1


class SegmentInfo(msgspec.Struct, frozen=True):
    """One sealed segment as the manifest lists it (``bytes``/``sha256``: its ``.dat`` blob)."""

    name: str
    first: Position
    last: Position
    events: int
    bytes: int
    sha256: str
    created_at: float
    index_bytes: int = 0
    index_sha256: str = ""
    ids_bytes: int = 0
    ids_sha256: str = ""


class Manifest(msgspec.Struct, frozen=True):
    """The archive's table of contents: segments in position order."""

    format: int = FORMAT
    generation: int = 0
    segments: list[SegmentInfo] = msgspec.field(default_factory=list)


class _ManifestFile(msgspec.Struct):
    sha256: str
    manifest: msgspec.Raw


class Row(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One event in a block (``stream``: its number in the block's stream table)."""

    stream: int
    event_id: str
    sequence: int
    type: str
    schema_version: int
    payload: bytes
    commit: int
    index: int
    recorded_at_us: int
    raw_metadata: bytes | None
    content_type: str
    tags: tuple[str, ...]


class _Block(msgspec.Struct, frozen=True, array_like=True):
    streams: list[tuple[str, str, str]]
    rows: list[Row]


_STREAM_IDS: dict[tuple[str, str, str], StreamId] = {}
_STREAM_IDS_MAX: Final = 200_000


def _stream_id(key: tuple[str, str, str]) -> StreamId:
    """The StreamId of ``key``, from a bounded process-wide cache (a StreamId validates its
    parts when built: once per stream, not once per event read)."""
    sid = _STREAM_IDS.get(key)
    if sid is None:
        if len(_STREAM_IDS) >= _STREAM_IDS_MAX:
            _STREAM_IDS.clear()
        sid = _STREAM_IDS[key] = StreamId(key[0], key[1], key[2])
    return sid


def _at(r: Row) -> tuple[int, int]:
    return r.commit, r.index


class Block:
    """A decoded block: its stream table and rows; events (and their StreamIds, validated
    once per block) are built on demand."""

    __slots__ = ("_ids", "rows", "streams")

    def __init__(self, streams: list[tuple[str, str, str]], rows: list[Row]) -> None:
        self.streams, self.rows = streams, rows
        self._ids: list[StreamId | None] = [None] * len(streams)

    def stream(self, number: int) -> StreamId:
        """The StreamId of stream ``number`` of this block."""
        sid = self._ids[number]
        if sid is None:
            sid = self._ids[number] = _stream_id(self.streams[number])
        return sid

    def event(self, r: Row) -> RecordedEvent:
        """The recorded event of row ``r``."""
        return RecordedEvent(
            r.event_id,
            self.stream(r.stream),
            r.sequence,
            r.type,
            r.schema_version,
            r.payload,
            Position(r.commit, r.index),
            r.recorded_at_us,
            r.raw_metadata,
            r.content_type,
            r.tags,
        )

    def events(self) -> list[RecordedEvent]:
        """Every event of the block in position order."""
        return [self.event(r) for r in self.rows]

    def rows_between(
        self, after: Position | None, before: Position | None, backward: bool
    ) -> Iterator[Row]:
        """The rows strictly between ``after`` and ``before`` (newest first when backward),
        found by binary search: a page that starts or stops inside a block builds no event
        outside its bounds."""
        rows = self.rows
        lo = 0 if after is None else bisect_right(rows, (after.commit, after.index), key=_at)
        hi = (
            len(rows)
            if before is None
            else bisect_left(rows, (before.commit, before.index), key=_at)
        )
        for k in range(hi - 1, lo - 1, -1) if backward else range(lo, hi):
            yield rows[k]

    def stream_number(self, stream: StreamId) -> int | None:
        """The number of ``stream`` in this block, None when it has no event here."""
        key = (stream.domain, stream.aggregate_id, stream.tenant)
        for i, s in enumerate(self.streams):
            if s == key:
                return i
        return None


def _encode_block(events: Sequence[RecordedEvent]) -> bytes:
    numbers: dict[StreamId, int] = {}
    rows = []
    for e in events:
        n = numbers.setdefault(e.stream, len(numbers))
        p = e.position
        rows.append(
            Row(
                n,
                e.event_id,
                e.sequence,
                e.type,
                e.schema_version,
                e.payload,
                p.commit,
                p.index,
                e.recorded_at_us,
                e.raw_metadata,
                e.content_type,
                e.tags,
            )
        )
    streams = [(s.domain, s.aggregate_id, s.tenant) for s in numbers]
    return zlib.compress(_encoder.encode(_Block(streams, rows)), 6)


class EncodedSegment(msgspec.Struct, frozen=True):
    """A segment ready to write: its info and the bytes of its three blobs."""

    info: SegmentInfo
    data: bytes
    index: bytes
    ids: bytes


_block_decoder = msgspec.msgpack.Decoder(_Block)
_ids_decoder = msgspec.msgpack.Decoder(dict[str, int])
_manifest_file_decoder = msgspec.json.Decoder(_ManifestFile)
_manifest_decoder = msgspec.json.Decoder(Manifest)
_encoder = msgspec.msgpack.Encoder()


def sha256(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def stream_key(stream: StreamId) -> str:
    """The index key of a stream (tenant, domain and aggregate id joined by U+001F)."""
    return f"{stream.tenant}\x1f{stream.domain}\x1f{stream.aggregate_id}"


def segment_name(first: Position, generation: int) -> str:
    """The name of a segment starting at ``first`` committed by manifest ``generation``."""
    return f"{first.commit:020d}-{first.index:020d}-g{generation:08d}"


def blob_names(name: str) -> tuple[str, str, str]:
    """The ``.dat``, ``.idx`` and ``.ids`` blob names of segment ``name``."""
    base = f"segments/{name}"
    return f"{base}.dat", f"{base}.idx", f"{base}.ids"


def _add(table: dict[str, list[int]], key: str, block: int) -> None:
    blocks = table.get(key)
    if blocks is None:
        table[key] = [block]
    elif blocks[-1] != block:
        blocks.append(block)


def encode_segment(
    events: Sequence[RecordedEvent], generation: int, created_at: float, block_events: int
) -> EncodedSegment:
    """The three blobs of a segment holding ``events`` (non-empty, in position order)."""
    parts = [
        (part[0].position, part[-1].position, part)
        for part in (events[i : i + block_events] for i in range(0, len(events), block_events))
    ]
    return encode_blocks(parts, events[0].position, events[-1].position, generation, created_at)


def encode_blocks(
    parts: Sequence[tuple[Position, Position, Sequence[RecordedEvent]]],
    first: Position,
    last: Position,
    generation: int,
    created_at: float,
) -> EncodedSegment:
    """The three blobs of a segment covering ``first``..``last`` made of the blocks ``parts``
    (each: the position range it covers and its events, possibly none): a rewrite or a removal
    keeps a segment's ranges and block numbers, only the events change."""
    blocks: list[BlockRef] = []
    streams: dict[str, list[int]] = {}
    ranges: dict[str, tuple[int, int]] = {}
    domains: dict[str, list[int]] = {}
    types: dict[str, list[int]] = {}
    tags: dict[str, list[int]] = {}
    ids: dict[str, int] = {}
    chunks: list[bytes] = []
    offset = count = 0
    for b, (start, end, part) in enumerate(parts):
        raw = _encode_block(part)
        blocks.append(BlockRef(offset, len(raw), start, end, len(part), sha256(raw)))
        chunks.append(raw)
        offset += len(raw)
        count += len(part)
        for e in part:
            key = stream_key(e.stream)
            _add(streams, key, b)
            seen = ranges.get(key)
            ranges[key] = (
                (e.sequence, e.sequence)
                if seen is None
                else (min(seen[0], e.sequence), max(seen[1], e.sequence))
            )
            _add(domains, e.stream.domain, b)
            _add(types, e.type, b)
            for tag in e.tags:
                _add(tags, tag, b)
            ids[e.event_id] = b
    entries = {k: StreamEntry(ranges[k][0], ranges[k][1], v) for k, v in streams.items()}
    data = b"".join(chunks)
    index = encode_index(blocks, entries, domains, types, tags)
    ids_blob = zlib.compress(_encoder.encode(ids), 6)
    info = SegmentInfo(
        name=segment_name(first, generation),
        first=first,
        last=last,
        events=count,
        bytes=len(data),
        sha256=sha256(data),
        created_at=created_at,
        index_bytes=len(index),
        index_sha256=sha256(index),
        ids_bytes=len(ids_blob),
        ids_sha256=sha256(ids_blob),
    )
    return EncodedSegment(info, data, index, ids_blob)


def inflate(blob: str, raw: bytes, expected: str) -> bytes:
    """``raw`` decompressed after its sha256 was checked against ``expected``; ArchiveCorrupt."""
    if sha256(raw) != expected:
        raise ArchiveCorrupt(f"archive blob {blob!r}: checksum mismatch", blob=blob)
    try:
        return zlib.decompress(raw)
    except zlib.error as exc:
        raise ArchiveCorrupt(
            f"archive blob {blob!r} does not decompress: {exc}", blob=blob
        ) from exc


def decode_block(blob: str, raw: bytes, expected: str) -> Block:
    """One block (checked, decompressed, decoded); ArchiveCorrupt."""
    data = inflate(blob, raw, expected)
    try:
        block = _block_decoder.decode(data)
        return Block(block.streams, block.rows)
    except (msgspec.DecodeError, ValueError) as exc:
        raise ArchiveCorrupt(f"archive blob {blob!r}: bad block: {exc}", blob=blob) from exc


def decode_index(blob: str, raw: bytes, expected: str) -> SegmentIndex:
    """A segment's index (checked, decompressed, decoded); ArchiveCorrupt."""
    return _decode_index(blob, inflate(blob, raw, expected))


def decode_ids(blob: str, raw: bytes, expected: str) -> dict[str, int]:
    """A segment's event id -> block table; ArchiveCorrupt."""
    data = inflate(blob, raw, expected)
    try:
        return _ids_decoder.decode(data)
    except (msgspec.DecodeError, ValueError) as exc:
        raise ArchiveCorrupt(f"archive blob {blob!r}: bad id table: {exc}", blob=blob) from exc


def encode_manifest(manifest: Manifest) -> bytes:
    """The manifest blob: the manifest with its own sha256."""
    body = msgspec.json.encode(manifest)
    return msgspec.json.encode(_ManifestFile(sha256(body), msgspec.Raw(body)))


def decode_manifest(raw: bytes) -> Manifest:
    """The manifest in ``raw`` once its checksum matches; ArchiveCorrupt otherwise."""
    try:
        wrapper = _manifest_file_decoder.decode(raw)
        body = bytes(wrapper.manifest)
        if sha256(body) != wrapper.sha256:
            raise ArchiveCorrupt("archive manifest: checksum mismatch", blob=MANIFEST)
        manifest = _manifest_decoder.decode(body)
    except (msgspec.DecodeError, ValueError) as exc:
        raise ArchiveCorrupt(f"archive manifest does not decode: {exc}", blob=MANIFEST) from exc
    if manifest.format != FORMAT:
        raise ArchiveCorrupt(f"archive manifest format {manifest.format} unknown", blob=MANIFEST)
    return manifest
