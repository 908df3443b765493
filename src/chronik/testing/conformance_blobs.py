"""The blob-store conformance suite: what ``chronik.archive.blobs.BlobStore`` means.

Subclass ``BlobStoreConformance`` in a test class with a ``blobs`` fixture (a fresh, empty
adapter); ``tests/unit/test_archive_blobs.py`` runs it on memory and directory blobs,
``tests/integration/test_archive_s3.py`` on S3 (a real moto server).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronik.archive.archive import Archive
from chronik.archive.blobs import BlobStore
from chronik.archive.errors import ArchiveCorrupt, ArchiveOrderRefused, BlobNotFound
from chronik.archive.format import MANIFEST, blob_names
from chronik.dcb import Query, QueryItem
from chronik.errors import ValidationError
from chronik.messages import JSON, EventData, RecordedEvent, StreamId
from chronik.store import EventStore, open_store

__all__ = ["ArchiveConformance", "BlobStoreConformance", "assert_reads_equal", "fill_store"]


class BlobStoreConformance:
    """Put, ranged get, sorted list under a prefix, delete, bad names and ranges."""

    async def test_put_then_get_returns_the_bytes(self, blobs: BlobStore) -> None:
        """A blob reads back byte for byte, binary and empty values included."""
        data = os.urandom(70_000) + b"\x00\xff"
        await blobs.put("a/one.dat", data)
        await blobs.put("empty", b"")
        assert await blobs.get("a/one.dat") == data
        assert await blobs.get("empty") == b""

    async def test_put_replaces_the_value(self, blobs: BlobStore) -> None:
        """A second put of a name replaces the whole value (shorter values too)."""
        await blobs.put("m.json", b"x" * 5000)
        await blobs.put("m.json", b"short")
        assert await blobs.get("m.json") == b"short"

    async def test_ranges_read_a_part(self, blobs: BlobStore) -> None:
        """``get(name, start, end)`` is bytes [start, end); past the end is cut short."""
        data = bytes(range(256)) * 4
        await blobs.put("r.bin", data)
        assert await blobs.get("r.bin", 10, 20) == data[10:20]
        assert await blobs.get("r.bin", 1000) == data[1000:]
        assert await blobs.get("r.bin", 1000, 5000) == data[1000:]
        assert await blobs.get("r.bin", 2000, 3000) == b""
        assert await blobs.get("r.bin", 7, 7) == b""
        assert await blobs.get("r.bin", 0, 1) == data[:1]

    async def test_missing_blob_is_blob_not_found(self, blobs: BlobStore) -> None:
        """Reading a blob that is not there raises BlobNotFound naming it (ranged too)."""
        with pytest.raises(BlobNotFound) as caught:
            await blobs.get("nope/x.dat")
        assert caught.value.blob == "nope/x.dat"
        with pytest.raises(BlobNotFound):
            await blobs.get("nope/x.dat", 3, 9)

    async def test_list_is_sorted_and_filtered_by_prefix(self, blobs: BlobStore) -> None:
        """``list`` returns the names under a prefix in sorted order, nested names included."""
        assert await blobs.list() == []
        names = ["segments/b.idx", "manifest.json", "segments/a.dat", "segments/a.idx", "z/y/x"]
        for name in names:
            await blobs.put(name, name.encode())
        assert await blobs.list() == sorted(names)
        assert await blobs.list("segments/") == [
            "segments/a.dat",
            "segments/a.idx",
            "segments/b.idx",
        ]
        assert await blobs.list("segments/a") == ["segments/a.dat", "segments/a.idx"]
        assert await blobs.list("none/") == []

    async def test_list_pages_through_many_names(self, blobs: BlobStore) -> None:
        """More names than one listing page (S3 pages at 1000) are all listed."""
        names = [f"many/{i:05d}" for i in range(1100)]
        for start in range(0, len(names), 100):
            await asyncio.gather(*(blobs.put(n, b"1") for n in names[start : start + 100]))
        assert await blobs.list("many/") == names

    async def test_delete_removes_and_missing_is_fine(self, blobs: BlobStore) -> None:
        """``delete`` removes a blob from reads and listings; deleting again is no error."""
        await blobs.put("d/1", b"1")
        await blobs.put("d/2", b"2")
        await blobs.delete("d/1")
        await blobs.delete("d/1")
        await blobs.delete("never/there")
        assert await blobs.list("d/") == ["d/2"]
        with pytest.raises(BlobNotFound):
            await blobs.get("d/1")

    async def test_concurrent_puts_of_one_name_leave_one_whole_value(
        self, blobs: BlobStore
    ) -> None:
        """Racing puts of one name leave exactly one of the written values, never a mix."""
        values = [bytes([i]) * 50_000 for i in range(8)]
        await asyncio.gather(*(blobs.put("race.bin", v) for v in values))
        assert await blobs.get("race.bin") in values
        assert await blobs.list("race") == ["race.bin"]

    @pytest.mark.parametrize("name", ["", "../x", "a/../b", "/abs", "a//b", "sp ace", "a\x00b"])
    async def test_bad_names_are_refused(self, blobs: BlobStore, name: str) -> None:
        """A name that could escape the store or is out of shape is a ValidationError."""
        with pytest.raises(ValidationError):
            await blobs.put(name, b"x")
        with pytest.raises(ValidationError):
            await blobs.get(name)

    @pytest.mark.parametrize(("start", "end"), [(-1, None), (5, 2), (0, -1)])
    async def test_bad_ranges_are_refused(
        self, blobs: BlobStore, start: int, end: int | None
    ) -> None:
        """A negative start or an end before the start is a ValidationError."""
        await blobs.put("x", b"abcdef")
        with pytest.raises(ValidationError):
            await blobs.get("x", start, end)


# --- the archive over a blob store ---------------------------------------------------------

_DOMAINS = ("shop", "bank")
_TYPES = ("thing.made", "thing.sold", "thing.gone")
_TAGS = ("c:1", "c:2", "p:9")

#: one event: stream number, type number, tag numbers, binary payload?
_EventSpec = tuple[int, int, list[int], bool]
_event_specs = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.integers(0, 2),
        st.lists(st.integers(0, 2), max_size=2),
        st.booleans(),
    ),
    min_size=1,
    max_size=40,
)


def _stream(n: int) -> StreamId:
    return StreamId(_DOMAINS[n % 2], f"a-{n}", "t1" if n == 5 else "")


async def fill_store(store: EventStore, specs: Sequence[_EventSpec]) -> list[RecordedEvent]:
    """Append one event per spec (each its own append) and return ``read_all``."""
    for i, (s, t, tags, binary) in enumerate(specs):
        data = EventData(
            _TYPES[t],
            b"\x00bin\xff" if binary else {"i": i, "canary": f"c-{i}"},
            metadata={"correlation_id": f"corr-{i}", "k": "v"} if i % 2 else None,
            content_type="application/octet-stream" if binary else JSON,
            tags=[_TAGS[x] for x in tags],
            schema_version=1 + i % 3,
        )
        await store.append(_stream(s), [data])
    return [e async for e in store.read_all()]


async def _collect(it: AsyncIterator[RecordedEvent]) -> list[RecordedEvent]:
    return [e async for e in it]


async def assert_reads_equal(archive: Archive, store: EventStore) -> None:
    """Every read of ``archive`` equals the same read of ``store`` (which holds what was
    sealed and nothing else)."""
    events = await _collect(store.read_all())
    assert await _collect(archive.read_all()) == events
    assert await _collect(archive.read_all(backward=True)) == events[::-1]
    for cut in {0, len(events) // 3, len(events) - 1}:
        at = events[cut].position
        assert await _collect(archive.read_all(after=at, limit=7)) == await _collect(
            store.read_all(after=at, limit=7)
        )
        assert await _collect(archive.read_all(before=at, backward=True)) == await _collect(
            store.read_all(before=at, backward=True)
        )
        q = Query([QueryItem(tags=["c:1"]), QueryItem(types=["thing.sold"], tags=["p:9"])])
        for backward in (False, True):
            assert await _collect(archive.read_query(q, after=at, backward=backward)) == (
                await _collect(store.read_query(q, after=at, backward=backward))
            )
    filtered: list[dict[str, Any]] = [
        {"domains": ["bank"]},
        {"types": ["thing.gone", "thing.made"]},
    ]
    for filters in filtered:
        assert await _collect(archive.read_all(**filters)) == await _collect(
            store.read_all(**filters)
        )
    for q in (Query.all(), Query.of(tags=["c:1", "c:2"]), Query.of(types=["thing.sold"])):
        assert await _collect(archive.read_query(q)) == await _collect(store.read_query(q))
    for n in range(6):
        stream = _stream(n)
        mine = [e for e in events if e.stream == stream]
        variants: list[dict[str, Any]] = [{}, {"backward": True}, {"from_sequence": 1, "limit": 2}]
        for args in variants:
            assert await _collect(archive.read_stream(stream, **args)) == await _collect(
                store.read_stream(stream, **args)
            )
        expected = (mine[0].sequence, mine[-1].sequence) if mine else None
        assert await archive.stream_range(stream) == expected
    for e in events:
        assert await archive.get_event(e.event_id) == e
    assert await archive.get_event("0190a6d7-0000-7000-8000-000000000000") is None
    assert archive.horizon == (events[-1].position if events else None)


class _ManifestFails(BlobStore):
    """Blobs that raise on a put of the manifest (a crash between segment and manifest)."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner, self.fail = inner, True

    async def put(self, name: str, data: bytes) -> None:
        if self.fail and name == MANIFEST:
            raise OSError("simulated crash before the manifest")
        await self.inner.put(name, data)

    async def get(self, name: str, start: int = 0, end: int | None = None) -> bytes:
        return await self.inner.get(name, start, end)

    async def list(self, prefix: str = "") -> list[str]:
        return await self.inner.list(prefix)

    async def delete(self, name: str) -> None:
        await self.inner.delete(name)


class ArchiveConformance:
    """An ``Archive`` over the adapter: reads equal the store's, crashes, corruption,
    rewrites. Needs a ``make_blobs`` fixture: a callable returning a fresh, empty BlobStore."""

    examples = 30

    def test_reads_equal_the_store_before_archiving(
        self, make_blobs: Callable[[], BlobStore]
    ) -> None:
        """Random streams, types, tags, metadata and binary payloads sealed in 1..3 segments of
        small blocks: every read (all, stream, query, by id; each direction, bound and filter)
        equals the store's, in this process and after reopening the archive."""

        @settings(max_examples=self.examples, deadline=None)
        @given(_event_specs, st.integers(1, 3), st.integers(1, 5))
        def run(specs: list[_EventSpec], parts: int, block: int) -> None:
            async def scenario() -> None:
                async with open_store("memory://") as store:
                    events = await fill_store(store, specs)
                    blobs = make_blobs()
                    archive = Archive(blobs, block_events=block)
                    await archive.open()
                    step = -(-len(events) // parts)
                    for start in range(0, len(events), step):
                        await archive.seal(events[start : start + step])
                    await assert_reads_equal(archive, store)
                    again = Archive(blobs)
                    await again.open()
                    await assert_reads_equal(again, store)
                    assert await again.verify() == []
                    await archive.close()

            asyncio.run(scenario())

        run()

    async def test_seal_refuses_events_at_the_horizon_or_out_of_order(
        self, make_blobs: Callable[[], BlobStore]
    ) -> None:
        """Sealing an empty batch, an event at or before the horizon, or events out of order
        raises ArchiveOrderRefused and writes nothing."""
        async with open_store("memory://") as store:
            events = await fill_store(store, [(0, 0, [], False)] * 6)
        archive = Archive(make_blobs())
        await archive.open()
        await archive.seal(events[:3])
        before = await archive.blobs.list()
        for bad in ([], events[2:4], events[:1], [events[4], events[3]], [events[5], events[5]]):
            with pytest.raises(ArchiveOrderRefused):
                await archive.seal(bad)
        assert await archive.blobs.list() == before
        assert archive.horizon == events[2].position
        await archive.seal(events[3:])
        assert [e async for e in archive.read_all()] == events
        await archive.close()

    async def test_a_crash_before_the_manifest_changes_nothing(
        self, make_blobs: Callable[[], BlobStore]
    ) -> None:
        """A seal whose manifest write fails leaves the archive as it was (this object and a
        fresh one); the retried seal succeeds over the orphan blobs."""
        async with open_store("memory://") as store:
            events = await fill_store(store, [(i % 3, i % 3, [i % 2], False) for i in range(9)])
        blobs = _ManifestFails(make_blobs())
        blobs.fail = False
        archive = Archive(blobs, block_events=2)
        await archive.open()
        await archive.seal(events[:4])
        blobs.fail = True
        with pytest.raises(OSError, match="simulated crash"):
            await archive.seal(events[4:])
        for view in (archive, Archive(blobs.inner)):
            await view.open()
            assert view.horizon == events[3].position
            assert [e async for e in view.read_all()] == events[:4]
            assert await view.get_event(events[5].event_id) is None
            assert await view.verify() == []
        blobs.fail = False
        await archive.seal(events[4:])
        fresh = Archive(blobs.inner)
        await fresh.open()
        assert [e async for e in fresh.read_all()] == events
        assert await fresh.collect_garbage() == []
        await archive.close()

    async def test_corruption_is_reported_and_reads_raise(
        self, make_blobs: Callable[[], BlobStore]
    ) -> None:
        """A flipped byte in a segment's data: ``verify`` names the blob, reads of its blocks
        raise ArchiveCorrupt; a missing index blob and a corrupt manifest are reported too."""
        async with open_store("memory://") as store:
            events = await fill_store(store, [(i % 4, 0, [], False) for i in range(12)])
        blobs = make_blobs()
        archive = Archive(blobs, block_events=3)
        await archive.open()
        first = await archive.seal(events[:6])
        second = await archive.seal(events[6:])
        dat, idx, _ = blob_names(first.name)
        raw = bytearray(await blobs.get(dat))
        raw[len(raw) // 2] ^= 0xFF
        await blobs.put(dat, bytes(raw))
        fresh = Archive(blobs)
        await fresh.open()
        problems = await fresh.verify()
        assert len(problems) == 1 and dat in problems[0] and "checksum" in problems[0]
        with pytest.raises(ArchiveCorrupt):
            [e async for e in fresh.read_all()]
        assert [e async for e in fresh.read_all(after=events[5].position)] == events[6:]
        await blobs.delete(blob_names(second.name)[1])
        assert any("missing" in p for p in await Archive(blobs).verify() or await fresh.verify())
        manifest = bytearray(await blobs.get(MANIFEST))
        manifest[-5] ^= 0x01
        await blobs.put(MANIFEST, bytes(manifest))
        with pytest.raises(ArchiveCorrupt):
            await Archive(blobs).open()
        assert idx

    async def test_rewrite_payload_reaches_the_archive(
        self, make_blobs: Callable[[], BlobStore]
    ) -> None:
        """A planted canary is found by ``scan``; after ``rewrite_payload`` it is gone from
        every blob, the event reads back rewritten (everything else kept), the old blobs are
        deleted and a fresh archive sees the same."""
        async with open_store("memory://") as store:
            events = await fill_store(store, [(i % 3, i % 3, [0], False) for i in range(20)])
        blobs = make_blobs()
        archive = Archive(blobs, block_events=4)
        await archive.open()
        seg = await archive.seal(events[:10])
        await archive.seal(events[10:])
        canary, target = b'"c-7"', events[7]
        assert await archive.scan([canary, b"absent-value"]) == [(seg.name, '"c-7"')]
        redacted = b'{"i":7,"canary":"***"}'
        assert await archive.rewrite_payload(target.event_id, redacted, b"{}", "x-redacted")
        assert not await archive.rewrite_payload("0190a6d7-0000-7000-8000-000000000000", b"{}")
        assert await archive.scan([canary]) == []
        changed = msgspec.structs.replace(
            target, payload=redacted, raw_metadata=b"{}", content_type="x-redacted"
        )
        expected = [changed if e.event_id == target.event_id else e for e in events]
        for view in (archive, Archive(blobs)):
            await view.open()
            assert [e async for e in view.read_all()] == expected
            assert await view.get_event(target.event_id) == changed
            assert await view.verify() == []
        live = {n for s in archive.segments for n in blob_names(s.name)}
        assert set(await blobs.list("segments/")) == live
        assert seg.name not in {s.name for s in archive.segments}
        await archive.close()
