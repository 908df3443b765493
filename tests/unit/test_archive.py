"""The archive beyond the conformance suites: what one stream read fetches from a 200k-event
archive, URLs, the SigV4 signer against AWS's published examples, caches and refresh."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chronik.archive import Archive, ArchiveCorrupt, MemoryBlobs
from chronik.archive.blobs import BlobStore
from chronik.archive.cache import LRU
from chronik.archive.directory import DirectoryBlobs
from chronik.archive.format import blob_names, decode_index, stream_key
from chronik.archive.s3 import S3Blobs
from chronik.archive.sigv4 import sign
from chronik.archive.urls import open_blobs
from chronik.errors import ConfigurationError
from chronik.messages import Position, RecordedEvent, StreamId


class CountingBlobs(BlobStore):
    """Blobs that count the gets and bytes read through them."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.gets = 0
        self.bytes = 0

    async def put(self, name: str, data: bytes) -> None:
        await self.inner.put(name, data)

    async def get(self, name: str, start: int = 0, end: int | None = None) -> bytes:
        data = await self.inner.get(name, start, end)
        self.gets += 1
        self.bytes += len(data)
        return data

    async def list(self, prefix: str = "") -> list[str]:
        return await self.inner.list(prefix)

    async def delete(self, name: str) -> None:
        await self.inner.delete(name)


def _events(n: int, streams: int) -> list[RecordedEvent]:
    seqs = [0] * streams
    out = []
    for i in range(n):
        s = (i * 7919) % streams
        out.append(
            RecordedEvent(
                f"0190a6d7-{i:04x}-7000-8000-{i:012x}"[:36],
                StreamId("shop", f"customer-{s}"),
                seqs[s],
                "shop.bought",
                1,
                b'{"sku":"abc-%d","qty":1}' % i,
                Position(i + 1),
                1_700_000_000_000_000 + i,
                b'{"correlation_id":"x"}',
                tags=(f"customer:{s}",),
            )
        )
        seqs[s] += 1
    return out


async def test_one_stream_of_200k_events_fetches_only_its_blocks(tmp_path: Path) -> None:
    """Reading one stream (20 events) of a 200k-event directory archive fetches each
    segment's index once and then exactly the blocks its index lists for the stream;
    a second read is served from the caches."""
    events = _events(200_000, 10_000)
    archive = Archive(DirectoryBlobs(tmp_path / "arc"))
    await archive.open()
    for start in range(0, len(events), 50_000):
        await archive.seal(events[start : start + 50_000])
    total = sum(s.bytes + s.index_bytes + s.ids_bytes for s in archive.segments)
    counting = CountingBlobs(DirectoryBlobs(tmp_path / "arc"))
    reader = Archive(counting)
    await reader.open()
    counting.gets = counting.bytes = 0
    stream = StreamId("shop", "customer-42")
    got = [e async for e in reader.read_stream(stream)]
    gets, read = counting.gets, counting.bytes
    warmed = Archive(counting)
    await warmed.warm_up()
    counting.gets = counting.bytes = 0
    assert [e async for e in warmed.read_stream(stream)] == got
    assert counting.gets == gets - len(archive.segments)
    counting.gets, counting.bytes = gets, read
    assert got == [e for e in events if e.stream == stream] and len(got) == 20
    expected_gets, expected_bytes = 0, 0
    for seg in archive.segments:
        name = blob_names(seg.name)[1]
        index = decode_index(name, await counting.inner.get(name), seg.index_sha256)
        entry = index.stream(stream_key(stream))
        assert entry is not None
        expected_gets += 1 + len(entry.blocks)
        expected_bytes += seg.index_bytes + sum(index.blocks[b].length for b in entry.blocks)
    assert (counting.gets, counting.bytes) == (expected_gets, expected_bytes)
    assert expected_gets <= 4 + 20  # 4 indexes, at most one block per event
    assert expected_bytes < 0.15 * total
    before = counting.gets
    assert [e async for e in reader.read_stream(stream, backward=True)] == got[::-1]
    assert counting.gets == before


async def test_refresh_sees_another_writers_seal() -> None:
    """A reader on the same blobs sees a seal by another Archive object after ``refresh``."""
    blobs = MemoryBlobs()
    events = _events(30, 4)
    writer, reader = Archive(blobs), Archive(blobs)
    await writer.open()
    await reader.open()
    await writer.seal(events[:10])
    assert await reader.refresh() is True and reader.horizon == events[9].position
    assert await reader.refresh() is False
    await writer.seal(events[10:])
    await reader.refresh()
    assert [e async for e in reader.read_all()] == events
    assert "3 segments" not in repr(reader) and "2 segments" in repr(reader)


async def test_rewrite_payloads_rewrites_several_segments_in_one_manifest() -> None:
    """``rewrite_payloads`` over events of two segments bumps the generation once and keeps
    the other events byte for byte; a block flipped on disk afterwards still fails reads."""
    blobs = MemoryBlobs()
    events = _events(40, 3)
    archive = Archive(blobs, block_events=4)
    await archive.open()
    await archive.seal(events[:20])
    await archive.seal(events[20:])
    generation = archive.generation
    done = await archive.rewrite_payloads(
        {events[3].event_id: (b"{}", None, None), events[33].event_id: (b"[]", None, None)}
    )
    assert done == 2 and archive.generation == generation + 1
    got = [e async for e in archive.read_all()]
    assert [e.payload for e in got if e.payload in (b"{}", b"[]")] == [b"{}", b"[]"]
    assert [e for e in got if e.payload not in (b"{}", b"[]")] == [
        e for e in events if e.event_id not in (events[3].event_id, events[33].event_id)
    ]
    name = next(n for n in await blobs.list("segments/") if n.endswith(".dat"))
    await blobs.put(name, b"\x00" + (await blobs.get(name))[1:])
    with pytest.raises(ArchiveCorrupt):
        [e async for e in Archive(blobs, block_events=4).read_all()]
    fresh = Archive(blobs)
    await fresh.open()
    with pytest.raises(ArchiveCorrupt, match=r"\.dat#0"):
        [e async for e in fresh.read_all()]


def test_lru_keeps_at_most_its_size() -> None:
    """The cache evicts the least recently used entry beyond its size."""
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)


def test_sigv4_matches_the_aws_documented_examples() -> None:
    """The signer reproduces the signatures of the S3 SigV4 documentation (GET Object with a
    Range header, and a ListObjects query)."""
    keys: dict[str, Any] = {
        "access_key": "AKIAIOSFODNN7EXAMPLE",
        "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "region": "us-east-1",
        "now": datetime(2013, 5, 24, tzinfo=UTC),
    }
    host = "examplebucket.s3.amazonaws.com"
    get = sign("GET", host, "/test.txt", {}, b"", headers={"Range": "bytes=0-9"}, **keys)
    assert get["authorization"].endswith(
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    listing = sign("GET", host, "/", {"max-keys": "2", "prefix": "J"}, b"", **keys)
    assert listing["authorization"].endswith(
        "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )


def test_open_blobs_picks_the_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """memory://, file:///path and a plain path, s3:// with keys from the environment; bad
    URLs and missing keys are ConfigurationErrors."""
    assert isinstance(open_blobs("memory://"), MemoryBlobs)
    for url in (f"file://{tmp_path}/a", str(tmp_path / "a")):
        blobs = open_blobs(url)
        assert isinstance(blobs, DirectoryBlobs) and blobs.path == tmp_path / "a"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="AWS_ACCESS_KEY_ID"):
        open_blobs("s3://bucket/p?endpoint=http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk")
    s3 = open_blobs("s3://bucket/some/prefix?endpoint=http://127.0.0.1:9&region=eu-west-1")
    assert isinstance(s3, S3Blobs)
    assert (s3.bucket, s3.prefix, s3.region, s3.endpoint) == (
        "bucket",
        "some/prefix/",
        "eu-west-1",
        "http://127.0.0.1:9",
    )
    assert "sk" not in repr(s3)
    for bad in ("ftp://x/y", "s3://bucket/p?secret=1", "file://host/p", "s3:///p"):
        with pytest.raises(ConfigurationError):
            open_blobs(bad)


async def test_directory_put_leaves_no_temp_files(tmp_path: Path) -> None:
    """After puts the directory holds exactly the blobs (the temp files were renamed)."""
    blobs = DirectoryBlobs(tmp_path)
    await blobs.put("segments/a.dat", os.urandom(1000))
    await blobs.put("segments/a.dat", b"x")
    assert sorted(p.name for p in (tmp_path / "segments").iterdir()) == ["a.dat"]


async def test_a_read_under_way_survives_a_rewrite_of_its_segment() -> None:
    """A read_all and a read_stream paused in a segment that a rewrite replaces (and whose old
    blobs it deletes) finish from the new segment: every event once, the rewrite visible in
    the blocks read after it."""
    blobs = MemoryBlobs()
    events = _events(64, 2)
    archive = Archive(blobs, block_events=4, block_cache=1)
    await archive.seal(events)
    scan = archive.read_all()
    stream = archive.read_stream(events[0].stream)
    first = [await anext(scan), await anext(stream)]
    assert await archive.rewrite_payload(events[-2].event_id, b'{"gone":1}')
    rest = [e async for e in scan]
    assert [first[0], *rest][:-2] == events[:-2]
    assert [e.payload for e in rest[-2:]] == [b'{"gone":1}', events[-1].payload]
    mine = [first[1]] + [e async for e in stream]
    assert [e.event_id for e in mine] == [e.event_id for e in events if e.stream == mine[0].stream]


async def test_a_rewrite_keeps_the_segment_block_layout() -> None:
    """A rewrite by an archive object with another block size keeps the segment's blocks
    (same count and positions), so block numbers held by readers stay valid."""
    blobs = MemoryBlobs()
    events = _events(50, 3)
    await Archive(blobs, block_events=4).seal(events)
    other = Archive(blobs, block_events=7)
    before = decode_index(*await _index_blob(blobs, other))
    assert await other.rewrite_payload(events[10].event_id, b"{}")
    after = decode_index(*await _index_blob(blobs, other))
    assert [(b.first, b.last, b.events) for b in after.blocks] == [
        (b.first, b.last, b.events) for b in before.blocks
    ]
    assert len(after.blocks) == 13


async def _index_blob(blobs: MemoryBlobs, archive: Archive) -> tuple[str, bytes, str]:
    await archive.open()
    seg = archive.segments[0]
    name = blob_names(seg.name)[1]
    return name, await blobs.get(name), seg.index_sha256
