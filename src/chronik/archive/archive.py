"""The archive: sealed ranges of the global log in a blob store, read back in one order.

``Archive(blobs)`` over any ``BlobStore`` (memory, directory, S3): ``await open()`` loads the
manifest, ``seal(events)`` appends a segment after the horizon, the ``read_*`` methods and
``get_event`` read archived events back exactly as they were stored, ``verify`` checks every
checksum, ``scan`` looks for plaintext (``chronik gdpr verify``), ``rewrite_payload`` reaches
archived events for redaction and shredding, and ``remove_events`` / ``remove_below`` delete
archived events (the scavenger's truncations and deletes, ``chronik.lifecycle.archive_scavenge``)
segment by segment, keeping each segment's position range and block numbers. The on-blob format
is ``chronik.archive.format``.

Writes (``seal``, rewrites) are serialized by a lock and assume one writer per archive (the
archiver job holds a lease); readers in other processes call ``refresh()`` to see new seals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping, Sequence

import msgspec

from chronik.archive.blobs import BlobStore
from chronik.archive.errors import ArchiveError, ArchiveOrderRefused, BlobNotFound
from chronik.archive.format import (
    BLOCK_EVENTS,
    MANIFEST,
    Manifest,
    SegmentInfo,
    blob_names,
    decode_manifest,
    encode_blocks,
    encode_manifest,
    encode_segment,
    inflate,
    sha256,
    stream_key,
)
from chronik.archive.reads import ArchiveReader
from chronik.messages import Position, RecordedEvent, StreamId

__all__ = ["Archive", "SegmentInfo"]

#: a replacement for one archived event: payload, raw metadata (None: keep), content type
#: (None: keep)
Replacement = tuple[bytes, bytes | None, str | None]


class Archive(ArchiveReader):
    """Sealed segments of the global log in ``blobs``; see the module docstring."""

    def __init__(
        self,
        blobs: BlobStore,
        *,
        block_events: int = BLOCK_EVENTS,
        index_cache: int = 128,
        block_cache: int = 64,
    ) -> None:
        super().__init__(blobs, index_cache=index_cache, block_cache=block_cache)
        if type(block_events) is not int or block_events < 1:
            raise ValueError(f"block_events must be a positive int, got {block_events!r}")
        self.block_events = block_events
        self._manifest = Manifest()
        self._lock = asyncio.Lock()
        self._opened = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Load the manifest (an archive without one is empty); ArchiveCorrupt when its own
        checksum does not match."""
        self._set(await self._load_manifest())
        self._opened = True

    async def _ready(self) -> None:
        if not self._opened:
            await self.open()

    async def refresh(self) -> bool:
        """Reload the manifest (another process may have sealed); True if it changed."""
        manifest = await self._load_manifest()
        if manifest.generation == self._manifest.generation:
            return False
        self._set(manifest)
        return True

    async def close(self) -> None:
        """Close the blob store and drop the caches."""
        self._indexes.clear()
        self._blocks.clear()
        self._ids.clear()
        self._opened = False
        await self.blobs.close()

    async def __aenter__(self) -> Archive:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _load_manifest(self) -> Manifest:
        try:
            raw = await self.blobs.get(MANIFEST)
        except BlobNotFound:
            return Manifest()
        return decode_manifest(raw)

    def _set(self, manifest: Manifest) -> None:
        self._manifest = manifest
        self._segments = list(manifest.segments)

    @property
    def horizon(self) -> Position | None:
        """The last archived position (None: the archive is empty)."""
        segments = self._segments
        return segments[-1].last if segments else None

    @property
    def segments(self) -> list[SegmentInfo]:
        """The sealed segments in position order."""
        return list(self._segments)

    @property
    def generation(self) -> int:
        """The manifest's generation: one more with every seal or rewrite."""
        return self._manifest.generation

    def __repr__(self) -> str:
        state = "open" if self._opened else "closed"
        return (
            f"<Archive {state} {len(self._segments)} segments horizon={self.horizon} "
            f"over {self.blobs!r}>"
        )

    # --- writes --------------------------------------------------------------------------------

    async def seal(self, events: Sequence[RecordedEvent]) -> SegmentInfo:
        """Archive ``events`` (position order, all after the horizon) as one new segment: its
        blobs first, then the manifest that makes it visible. ArchiveOrderRefused (nothing
        written) for an empty batch, an event at or before the horizon or out of order."""
        if not events:
            raise ArchiveOrderRefused("nothing to seal: no events")
        await self._ready()
        async with self._lock:
            previous = self.horizon
            for e in events:
                if not isinstance(e, RecordedEvent):
                    raise ArchiveOrderRefused(f"expected RecordedEvent, got {e!r}")
                if previous is not None and e.position <= previous:
                    where = "at or before the horizon" if e is events[0] else "out of order"
                    raise ArchiveOrderRefused(
                        f"event {e.event_id} at position {e.position} is {where} (after {previous})"
                    )
                previous = e.position
            generation = self._manifest.generation + 1
            encoded = await asyncio.to_thread(
                encode_segment, list(events), generation, time.time(), self.block_events
            )
            await self._write_segment(encoded.info, encoded.data, encoded.index, encoded.ids)
            await self._commit(generation, [*self._segments, encoded.info])
            return encoded.info

    async def _write_segment(
        self, info: SegmentInfo, data: bytes, index: bytes, ids: bytes
    ) -> None:
        dat_name, idx_name, ids_name = blob_names(info.name)
        await self.blobs.put(dat_name, data)
        await self.blobs.put(idx_name, index)
        await self.blobs.put(ids_name, ids)

    async def _commit(self, generation: int, segments: list[SegmentInfo]) -> None:
        manifest = Manifest(generation=generation, segments=segments)
        await self.blobs.put(MANIFEST, encode_manifest(manifest))
        self._set(manifest)

    async def rewrite_payload(
        self,
        event_id: str,
        payload: bytes,
        metadata: bytes | None = None,
        content_type: str | None = None,
    ) -> bool:
        """Replace one archived event's payload (and raw metadata / content type when given):
        a new segment blob, then the manifest, then the old blobs go. False if no archived
        event has this id."""
        return await self.rewrite_payloads({event_id: (payload, metadata, content_type)}) == 1

    async def rewrite_payloads(self, changes: Mapping[str, Replacement]) -> int:
        """``rewrite_payload`` for many events at once (one new blob per segment touched, one
        manifest); the number of archived events rewritten."""
        for event_id, (payload, metadata, content_type) in changes.items():
            if not isinstance(event_id, str) or not isinstance(payload, bytes):
                raise ArchiveError(f"a rewrite of {event_id!r} needs str id and bytes payload")
            if metadata is not None and not isinstance(metadata, bytes):
                raise ArchiveError(f"metadata of {event_id!r} must be bytes or None")
            if content_type is not None and not isinstance(content_type, str):
                raise ArchiveError(f"content type of {event_id!r} must be str or None")

        def change(e: RecordedEvent) -> RecordedEvent | None:
            found = changes.get(e.event_id)
            if found is None:
                return e
            payload, metadata, content_type = found
            return msgspec.structs.replace(
                e,
                payload=payload,
                raw_metadata=e.raw_metadata if metadata is None else metadata,
                content_type=e.content_type if content_type is None else content_type,
            )

        await self._ready()
        async with self._lock:
            return await self._rebuild(await self._holding(changes), change)

    async def remove_events(self, event_ids: Collection[str]) -> int:
        """Delete the archived events with these ids (one new blob set per segment touched,
        one manifest; the segments keep their position ranges, so the horizon stays); the
        number removed. Their old blobs go at once (``collect_garbage`` takes orphans of a
        crash)."""
        ids = set(event_ids)
        if not all(isinstance(i, str) for i in ids):
            raise ArchiveError("event ids to remove must be str")
        await self._ready()
        async with self._lock:
            return await self._rebuild(
                await self._holding(ids), lambda e: None if e.event_id in ids else e
            )

    async def remove_below(
        self, bounds: Mapping[StreamId, int], keep_last: str | None = None
    ) -> int:
        """Delete each stream's archived events with a sequence below its bound in
        ``bounds`` (the scavenger's truncation points), keeping per stream the last one of
        type ``keep_last`` below it (the deletion event); batched as ``remove_events``."""
        for stream, before in bounds.items():
            if not isinstance(stream, StreamId) or type(before) is not int:
                raise ArchiveError(f"invalid bound {stream!r}: {before!r}")
        await self._ready()
        async with self._lock:
            keys = {stream_key(s): b for s, b in bounds.items()}
            touched: list[SegmentInfo] = []
            for seg in self._segments:
                index = await self._index(seg)
                entries = ((index.stream(k), b) for k, b in keys.items())
                if any(entry is not None and entry.first < b for entry, b in entries):
                    touched.append(seg)
            kept: dict[StreamId, tuple[int, str]] = {}
            if keep_last is not None:
                for seg in touched:
                    index = await self._index(seg)
                    for n in index.types.get(keep_last, ()):
                        for e in (await self._block(seg, index, n)).events():
                            bound = bounds.get(e.stream)
                            if (
                                e.type == keep_last
                                and bound is not None
                                and kept.get(e.stream, (-1, ""))[0] < e.sequence < bound
                            ):
                                kept[e.stream] = (e.sequence, e.event_id)
            keep = {event_id for _, event_id in kept.values()}

            def below(e: RecordedEvent) -> RecordedEvent | None:
                bound = bounds.get(e.stream)
                if bound is None or e.sequence >= bound or e.event_id in keep:
                    return e
                return None

            return await self._rebuild(touched, below)

    async def _holding(self, event_ids: Collection[str]) -> list[SegmentInfo]:
        """The segments that hold any of ``event_ids``, in position order."""
        names: set[str] = set()
        for seg in self._segments:
            table = await self._id_table(seg)
            if any(i in table for i in event_ids):
                names.add(seg.name)
        return [s for s in self._segments if s.name in names]

    async def _rebuild(
        self, touched: Sequence[SegmentInfo], fn: Callable[[RecordedEvent], RecordedEvent | None]
    ) -> int:
        """Each segment of ``touched`` rewritten block by block through ``fn`` (an event, a
        changed one, or None: gone), then one manifest, then the old blobs deleted; the
        number of events ``fn`` changed or removed. The caller holds the lock."""
        if not touched:
            return 0
        generation = self._manifest.generation + 1
        replaced: dict[str, SegmentInfo] = {}
        done = 0
        for seg in touched:
            index = await self._index(seg)
            parts: list[tuple[Position, Position, list[RecordedEvent]]] = []
            for b, ref in enumerate(index.blocks):
                out: list[RecordedEvent] = []
                for e in (await self._block(seg, index, b)).events():
                    new = fn(e)
                    if new is not e:
                        done += 1
                    if new is not None:
                        out.append(new)
                parts.append((ref.first, ref.last, out))
            encoded = await asyncio.to_thread(
                encode_blocks, parts, seg.first, seg.last, generation, seg.created_at
            )
            await self._write_segment(encoded.info, encoded.data, encoded.index, encoded.ids)
            replaced[seg.name] = encoded.info
        await self._commit(generation, [replaced.get(s.name, s) for s in self._segments])
        for old in touched:
            for name in blob_names(old.name):
                await self.blobs.delete(name)
        return done

    async def stream_ranges(self) -> dict[StreamId, tuple[int, int]]:
        """Every archived stream with its first and last archived sequence."""
        await self._ready()
        out: dict[StreamId, tuple[int, int]] = {}
        for seg in self._segments:
            index = await self._index(seg)
            for key in index.streams.keys:
                entry = index.stream(key)
                assert entry is not None
                tenant, domain, aggregate_id = key.split("\x1f", 2)
                sid = StreamId(domain, aggregate_id, tenant)
                seen = out.get(sid)
                out[sid] = (
                    (entry.first, entry.last)
                    if seen is None
                    else (min(seen[0], entry.first), max(seen[1], entry.last))
                )
        return out

    async def collect_garbage(self) -> list[str]:
        """Delete segment blobs no manifest entry names (orphans of a crashed seal or
        rewrite); the names deleted. Only while no other process writes this archive."""
        await self._ready()
        async with self._lock:
            live = {n for s in self._segments for n in blob_names(s.name)}
            gone = [n for n in await self.blobs.list("segments/") if n not in live]
            for name in gone:
                await self.blobs.delete(name)
            return gone

    # --- checks --------------------------------------------------------------------------------

    async def verify(self) -> list[str]:
        """Every problem found: the manifest's checksum, each segment blob missing or not
        matching its sha256 or size; ``[]`` when the archive is sound."""
        await self._ready()
        problems: list[str] = []
        try:
            await self._load_manifest()
        except ArchiveError as exc:
            problems.append(str(exc))
        for seg in self._segments:
            expected = (
                (seg.bytes, seg.sha256),
                (seg.index_bytes, seg.index_sha256),
                (seg.ids_bytes, seg.ids_sha256),
            )
            for name, (size, digest) in zip(blob_names(seg.name), expected, strict=True):
                try:
                    data = await self.blobs.get(name)
                except BlobNotFound:
                    problems.append(f"segment {seg.name}: blob {name!r} is missing")
                    continue
                if len(data) != size or sha256(data) != digest:
                    problems.append(f"segment {seg.name}: blob {name!r}: checksum mismatch")
        return problems

    async def scan(self, needles: Sequence[bytes]) -> list[tuple[str, str]]:
        """(segment, needle) for each needle found in a segment's decompressed content
        (events, index, id table): plaintext left in the archive."""
        await self._ready()
        hits: list[tuple[str, str]] = []
        for seg in self._segments:
            found: set[bytes] = set()
            index = await self._index(seg)
            names = blob_names(seg.name)
            contents = [
                inflate(names[1], await self.blobs.get(names[1]), seg.index_sha256),
                inflate(names[2], await self.blobs.get(names[2]), seg.ids_sha256),
            ]
            data = await self.blobs.get(names[0])  # one get: the whole segment
            for b, ref in enumerate(index.blocks):
                raw = data[ref.offset : ref.offset + ref.length]
                contents.append(inflate(f"{names[0]}#{b}", raw, ref.sha256))
            for content in contents:
                found.update(n for n in needles if n and n in content)
            for needle in needles:
                if needle in found:
                    hits.append((seg.name, needle.decode("utf-8", "backslashreplace")))
        return hits
