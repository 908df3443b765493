"""A segment's index blob (``segments/<name>.idx``): what each block of the segment holds.

Encoded as ``zlib(msgpack(array))``: the blocks (byte range in ``.dat``, first and last
position, event count, sha256), then streams, domains, types and tags, each a *posting list*:
keys sorted, and the block numbers of key ``i`` at ``blocks[offsets[i]:offsets[i + 1]]``;
streams add their first and last sequence in the segment. Integers travel as little-endian
packed arrays (``array`` bytes), so decoding the index of a segment with 100k streams costs
one list of strings, not 100k small objects; a lookup is a binary search.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Mapping, Sequence

import msgspec

from chronik.archive.errors import ArchiveCorrupt
from chronik.messages import Position

__all__ = ["BlockRef", "Postings", "SegmentIndex", "StreamEntry", "decode_index", "encode_index"]


class BlockRef(msgspec.Struct, frozen=True, array_like=True):
    """A block of a segment: its byte range in ``.dat``, positions, count and sha256."""

    offset: int
    length: int
    first: Position
    last: Position
    events: int
    sha256: str


class StreamEntry(msgspec.Struct, frozen=True, array_like=True):
    """A stream's events in one segment: first and last sequence, the blocks holding them."""

    first: int
    last: int
    blocks: list[int]


def _pack(values: Sequence[int], code: str) -> bytes:
    packed = array(code, values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpack(data: bytes, code: str) -> array[int]:
    out = array(code)
    out.frombytes(data)
    if sys.byteorder == "big":
        out.byteswap()
    return out


class _PostingsFile(msgspec.Struct, frozen=True, array_like=True):
    keys: list[str]
    offsets: bytes
    blocks: bytes


class _IndexFile(msgspec.Struct, frozen=True, array_like=True):
    blocks: list[BlockRef]
    streams: _PostingsFile
    stream_first: bytes
    stream_last: bytes
    domains: _PostingsFile
    types: _PostingsFile
    tags: _PostingsFile


class Postings:
    """Sorted keys, each with the block numbers that hold it."""

    __slots__ = ("_blocks", "_offsets", "keys")

    def __init__(self, keys: list[str], offsets: array[int], blocks: array[int]) -> None:
        self.keys, self._offsets, self._blocks = keys, offsets, blocks

    @classmethod
    def of(cls, table: Mapping[str, list[int]]) -> Postings:
        """The postings of ``table`` (key -> ascending block numbers)."""
        keys = sorted(table)
        offsets, blocks = array("I", [0]), array("I")
        for key in keys:
            blocks.extend(table[key])
            offsets.append(len(blocks))
        return cls(keys, offsets, blocks)

    def find(self, key: str) -> int | None:
        """The number of ``key`` among the keys, or None."""
        i = bisect_left(self.keys, key)
        return i if i < len(self.keys) and self.keys[i] == key else None

    def get(self, key: str, default: Sequence[int] = ()) -> Sequence[int]:
        """The block numbers of ``key`` (``default`` when it has none)."""
        i = self.find(key)
        if i is None:
            return default
        return self._blocks[self._offsets[i] : self._offsets[i + 1]]

    def _file(self) -> _PostingsFile:
        return _PostingsFile(self.keys, _pack(self._offsets, "I"), _pack(self._blocks, "I"))

    def __len__(self) -> int:
        return len(self.keys)


class SegmentIndex:
    """What a segment holds, by block: ``blocks``, and ``streams``, ``domains``, ``types``,
    ``tags`` (Postings; ``stream(key)`` adds the sequence range)."""

    __slots__ = ("_first", "_last", "blocks", "domains", "streams", "tags", "types")

    def __init__(
        self,
        blocks: list[BlockRef],
        streams: Postings,
        first: array[int],
        last: array[int],
        domains: Postings,
        types: Postings,
        tags: Postings,
    ) -> None:
        self.blocks, self.streams, self._first, self._last = blocks, streams, first, last
        self.domains, self.types, self.tags = domains, types, tags

    def stream(self, key: str) -> StreamEntry | None:
        """The stream with index key ``key`` in this segment, or None."""
        i = self.streams.find(key)
        if i is None:
            return None
        return StreamEntry(self._first[i], self._last[i], list(self.streams.get(key)))


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_IndexFile)


def encode_index(
    blocks: list[BlockRef],
    streams: Mapping[str, StreamEntry],
    domains: Mapping[str, list[int]],
    types: Mapping[str, list[int]],
    tags: Mapping[str, list[int]],
) -> bytes:
    """The index blob of a segment."""
    postings = Postings.of({k: e.blocks for k, e in streams.items()})
    entries = [streams[k] for k in postings.keys]
    file = _IndexFile(
        blocks,
        postings._file(),
        _pack([e.first for e in entries], "q"),
        _pack([e.last for e in entries], "q"),
        Postings.of(domains)._file(),
        Postings.of(types)._file(),
        Postings.of(tags)._file(),
    )
    return zlib.compress(_encoder.encode(file), 6)


def _postings(file: _PostingsFile) -> Postings:
    offsets, blocks = _unpack(file.offsets, "I"), _unpack(file.blocks, "I")
    if len(offsets) != len(file.keys) + 1 or (len(offsets) and offsets[-1] != len(blocks)):
        raise ValueError("posting list offsets do not match its keys")
    return Postings(file.keys, offsets, blocks)


def decode_index(blob: str, data: bytes) -> SegmentIndex:
    """The index in ``data`` (already checked and decompressed); ArchiveCorrupt."""
    try:
        file = _decoder.decode(data)
        streams = _postings(file.streams)
        first, last = _unpack(file.stream_first, "q"), _unpack(file.stream_last, "q")
        if not len(first) == len(last) == len(streams):
            raise ValueError("stream ranges do not match the streams")
        return SegmentIndex(
            file.blocks,
            streams,
            first,
            last,
            _postings(file.domains),
            _postings(file.types),
            _postings(file.tags),
        )
    except (msgspec.DecodeError, ValueError) as exc:
        raise ArchiveCorrupt(f"archive blob {blob!r}: bad index: {exc}", blob=blob) from exc
