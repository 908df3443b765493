"""The archive's reads: the read half of ``chronik.archive.archive.Archive``.

Every read walks the manifest's segments in position order (reversed when backward), picks
the blocks its index says can hold a match (by position range, stream, domain, type or tag),
fetches only those byte ranges and filters the decoded events. Decoded indexes and blocks sit
in bounded LRU caches keyed by segment name (names are never reused for other content).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

from chronik.archive.blobs import BlobStore
from chronik.archive.cache import LRU
from chronik.archive.errors import BlobNotFound
from chronik.archive.format import (
    Block,
    SegmentIndex,
    SegmentInfo,
    blob_names,
    decode_block,
    decode_ids,
    decode_index,
    stream_key,
)
from chronik.archive.index import Postings
from chronik.dcb import Query
from chronik.errors import ValidationError
from chronik.messages import Position, RecordedEvent, StreamId

__all__ = ["ArchiveReader"]

_RUN_BLOCKS = 64
_RUN_BYTES = 8 << 20


def _check_limit(limit: int | None) -> None:
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValidationError(f"invalid limit {limit!r}", field="limit")


def _union(table: Postings, keys: Iterable[str]) -> set[int]:
    out: set[int] = set()
    for key in keys:
        out.update(table.get(key, ()))
    return out


def _query_blocks(index: SegmentIndex, query: Query) -> set[int] | None:
    """The blocks that can hold an event ``query`` matches (None: any block)."""
    out: set[int] = set()
    for item in query.items:
        if not item.types and not item.tags:
            return None
        blocks: set[int] | None = _union(index.types, item.types) if item.types else None
        for tag in item.tags:
            tagged = set(index.tags.get(tag, ()))
            blocks = tagged if blocks is None else blocks & tagged
        out.update(blocks or ())
    return out


class ArchiveReader:
    """Reads over the segments in ``self._segments`` (set by the subclass)."""

    def __init__(
        self,
        blobs: BlobStore,
        *,
        index_cache: int = 128,
        block_cache: int = 64,
    ) -> None:
        self.blobs = blobs
        self._segments: list[SegmentInfo] = []
        self._indexes: LRU[str, SegmentIndex] = LRU(index_cache)
        self._blocks: LRU[tuple[str, int], Block] = LRU(block_cache)
        self._ids: LRU[str, dict[str, int]] = LRU(max(index_cache // 8, 4))

    async def _ready(self) -> None:
        """Open on first use (the subclass loads its manifest)."""

    # --- blobs, cached -------------------------------------------------------------------------

    async def _index(self, seg: SegmentInfo) -> SegmentIndex:
        index = self._indexes.get(seg.name)
        if index is None:
            name = blob_names(seg.name)[1]
            index = decode_index(name, await self.blobs.get(name), seg.index_sha256)
            self._indexes.put(seg.name, index)
        return index

    async def _block(self, seg: SegmentInfo, index: SegmentIndex, b: int) -> Block:
        block = self._blocks.get((seg.name, b))
        if block is None:
            ref = index.blocks[b]
            name = blob_names(seg.name)[0]
            try:
                raw = await self.blobs.get(name, ref.offset, ref.offset + ref.length)
            except BlobNotFound:
                successor = self._successor(seg)
                if successor is None:
                    raise
                return await self._block(successor, await self._index(successor), b)
            block = decode_block(f"{name}#{b}", raw, ref.sha256)
            self._blocks.put((seg.name, b), block)
        return block

    def _successor(self, seg: SegmentInfo) -> SegmentInfo | None:
        """The segment that replaced ``seg`` (a rewrite while a read was under way: same
        events, so the same blocks), or None."""
        for other in self._segments:
            if other.name != seg.name and (other.first, other.last) == (seg.first, seg.last):
                return other
        return None

    async def _scan(
        self, seg: SegmentInfo, index: SegmentIndex, numbers: list[int]
    ) -> AsyncIterator[Block]:
        """The blocks ``numbers`` (in that order) of a segment: a run of adjacent blocks is
        fetched in one ranged get, runs doubling from 1 block up to _RUN_BLOCKS / _RUN_BYTES
        (a short read stays cheap, a long scan makes few requests)."""
        name = blob_names(seg.name)[0]
        i, run = 0, 1
        while i < len(numbers):
            cached = self._blocks.get((seg.name, numbers[i]))
            if cached is not None:
                yield cached
                i += 1
                continue
            j = i + 1
            size = index.blocks[numbers[i]].length
            while (
                j < len(numbers)
                and j - i < run
                and abs(numbers[j] - numbers[j - 1]) == 1
                and size + index.blocks[numbers[j]].length <= _RUN_BYTES
            ):
                size += index.blocks[numbers[j]].length
                j += 1
            refs = [index.blocks[b] for b in numbers[i:j]]
            start = min(r.offset for r in refs)
            try:
                raw = await self.blobs.get(name, start, max(r.offset + r.length for r in refs))
            except BlobNotFound:  # rewritten meanwhile: block by block through the successor
                for b in numbers[i:j]:
                    yield await self._block(seg, index, b)
                i = j
                continue
            for b, r in zip(numbers[i:j], refs, strict=True):
                part = raw[r.offset - start : r.offset - start + r.length]
                block = decode_block(f"{name}#{b}", part, r.sha256)
                self._blocks.put((seg.name, b), block)  # a paged read resumes in this block
                yield block
            i, run = j, min(run * 2, _RUN_BLOCKS)

    async def _id_table(self, seg: SegmentInfo) -> dict[str, int]:
        ids = self._ids.get(seg.name)
        if ids is None:
            name = blob_names(seg.name)[2]
            ids = decode_ids(name, await self.blobs.get(name), seg.ids_sha256)
            self._ids.put(seg.name, ids)
        return ids

    async def _locate(self, event_id: str) -> tuple[SegmentInfo, int] | None:
        for seg in reversed(self._segments):
            block = (await self._id_table(seg)).get(event_id)
            if block is not None:
                return seg, block
        return None

    async def warm_up(self) -> None:
        """Load every segment's index into the cache (as far as it holds them), so that the
        first stream read pays for block fetches only."""
        await self._ready()
        for seg in list(self._segments):
            await self._index(seg)

    # --- reads ---------------------------------------------------------------------------------

    async def read_all(
        self,
        after: Position | None = None,
        before: Position | None = None,
        backward: bool = False,
        limit: int | None = None,
        domains: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Archived events strictly between ``after`` and ``before`` in position order (newest
        first with ``backward``), of ``domains`` and ``types`` when given."""
        _check_limit(limit)
        for field, values in (("domains", domains), ("types", types)):
            if isinstance(values, str):
                raise ValidationError(f"{field} must be a list of strings", field=field)
        if limit == 0:
            return
        await self._ready()
        domain_set = None if domains is None else set(domains)
        type_set = None if types is None else set(types)
        left = limit
        segments = list(self._segments)
        for seg in reversed(segments) if backward else segments:
            if (after is not None and seg.last <= after) or (
                before is not None and seg.first >= before
            ):
                continue
            index = await self._index(seg)
            wanted: set[int] | None = None
            if domain_set is not None:
                wanted = _union(index.domains, domain_set)
            if type_set is not None:
                typed = _union(index.types, type_set)
                wanted = typed if wanted is None else wanted & typed
            count = len(index.blocks)
            numbers = [
                b
                for b in (range(count - 1, -1, -1) if backward else range(count))
                if (wanted is None or b in wanted)
                and (after is None or index.blocks[b].last > after)
                and (before is None or index.blocks[b].first < before)
            ]
            async for block in self._scan(seg, index, numbers):
                streams = block.streams
                for r in block.rows_between(after, before, backward):
                    if (domain_set is not None and streams[r.stream][0] not in domain_set) or (
                        type_set is not None and r.type not in type_set
                    ):
                        continue
                    yield block.event(r)
                    if left is not None:
                        left -= 1
                        if left == 0:
                            return

    async def read_stream(
        self,
        stream: StreamId,
        from_sequence: int | None = None,
        backward: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """The archived events of ``stream`` from ``from_sequence`` (inclusive) in either
        direction (from the start, or the end when backward, when None)."""
        _check_limit(limit)
        if from_sequence is not None and (type(from_sequence) is not int or from_sequence < 0):
            raise ValidationError(f"invalid from_sequence {from_sequence!r}", field="from")
        if limit == 0:
            return
        await self._ready()
        key = stream_key(stream)
        left = limit
        segments = list(self._segments)
        for seg in reversed(segments) if backward else segments:
            index = await self._index(seg)
            entry = index.stream(key)
            if entry is None or (
                from_sequence is not None
                and (entry.first > from_sequence if backward else entry.last < from_sequence)
            ):
                continue
            for b in reversed(entry.blocks) if backward else entry.blocks:
                block = await self._block(seg, index, b)
                number = block.stream_number(stream)
                rows = block.rows
                for r in reversed(rows) if backward else rows:
                    if r.stream != number or (
                        from_sequence is not None
                        and (r.sequence > from_sequence if backward else r.sequence < from_sequence)
                    ):
                        continue
                    yield block.event(r)
                    if left is not None:
                        left -= 1
                        if left == 0:
                            return

    async def read_query(
        self,
        query: Query,
        after: Position | None = None,
        limit: int | None = None,
        backward: bool = False,
    ) -> AsyncIterator[RecordedEvent]:
        """The archived events ``query`` matches in position order: after ``after`` forward,
        before it backward (newest first)."""
        if not isinstance(query, Query):
            raise ValidationError(f"expected a Query, got {query!r}", field="query")
        _check_limit(limit)
        if limit == 0:
            return
        await self._ready()
        left = limit
        segments = list(self._segments)
        for seg in reversed(segments) if backward else segments:
            if after is not None and (seg.first >= after if backward else seg.last <= after):
                continue
            index = await self._index(seg)
            wanted = _query_blocks(index, query)
            count = len(index.blocks)
            numbers = [
                b
                for b in (range(count - 1, -1, -1) if backward else range(count))
                if (wanted is None or b in wanted)
                and (
                    after is None
                    or (index.blocks[b].first < after if backward else index.blocks[b].last > after)
                )
            ]
            async for block in self._scan(seg, index, numbers):
                rows = (
                    block.rows_between(None, after, True)
                    if backward
                    else block.rows_between(after, None, False)
                )
                for r in rows:
                    e = block.event(r)
                    if not query.matches(e):
                        continue
                    yield e
                    if left is not None:
                        left -= 1
                        if left == 0:
                            return

    async def stream_range(self, stream: StreamId) -> tuple[int, int] | None:
        """The first and last archived sequence of ``stream``, or None when none is archived."""
        await self._ready()
        key = stream_key(stream)
        first: int | None = None
        last = -1
        for seg in self._segments:
            entry = (await self._index(seg)).stream(key)
            if entry is not None:
                first = entry.first if first is None else min(first, entry.first)
                last = max(last, entry.last)
        return None if first is None else (first, last)

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        """The archived event with this id, or None."""
        await self._ready()
        found = await self._locate(event_id)
        if found is None:
            return None
        seg, b = found
        block = await self._block(seg, await self._index(seg), b)
        for r in block.rows:
            if r.event_id == event_id:
                return block.event(r)
        return None
