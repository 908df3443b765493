"""Deletions reach the archive: truncation, soft and hard deletes and max_count, scavenged, remove
archived events from every read through the archive and from its blobs; a run cut short
between the hot deletes and the archive rewrite (or inside the rewrite) is completed by the next."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import chronik
from chronik.archive import Archive
from chronik.archive.directory import DirectoryBlobs
from chronik.dcb import Query, QueryItem
from chronik.lifecycle.archiver import archive_log
from chronik.lifecycle.scavenger import scavenge
from chronik.store.base import EventStore
from chronik.store.deletion import STREAM_DELETED
from chronik.store.retention import Retention

A, B, C, D, E = (chronik.StreamId("acct", n) for n in "abcde")
TAG = Query([QueryItem(tags=("all",))])


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    """A memory or SQLite store with a directory archive attached."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'db.sqlite'}"
    async with chronik.open_store(url) as s:
        archive = Archive(DirectoryBlobs(tmp_path / "arc"))
        await archive.open()
        s.attach_archive(archive)
        yield s


def _canary(stream: chronik.StreamId, i: int) -> str:
    return f"canary-{stream.aggregate_id}-{i}"


async def _fill(store: EventStore) -> None:
    for i in range(6):
        for s in (A, B, C, D, E):
            data = chronik.EventData("acct.moved", {"c": _canary(s, i)}, tags=("all",))
            await store.append(s, [data])


async def _subscribed(store: EventStore, n: int) -> list[chronik.RecordedEvent]:
    out: list[chronik.RecordedEvent] = []

    async def take() -> None:
        async with store.subscribe() as sub:
            async for e in sub:
                out.append(e)
                if len(out) == n:
                    return

    await asyncio.wait_for(take(), 5)
    return out


async def _delete_and_archive(store: EventStore) -> Archive:
    await _fill(store)
    archive = store.archive
    assert archive is not None
    report = await archive_log(store, archive, retain_at_least=4, segment_events=7)
    assert report.dropped == 26
    await store.set_retention(A, Retention(truncate_before=3))
    await store.delete_stream(B)
    await store.delete_stream(C, hard=True)
    await store.set_retention(D, Retention(max_count=2))
    return archive


async def _check_gone(store: EventStore, archive: Archive) -> None:
    gone = {_canary(s, i) for s in (B, C) for i in range(6)}
    gone |= {_canary(A, i) for i in range(3)} | {_canary(D, i) for i in range(4)}
    kept = {_canary(s, i) for s in (A, E) for i in range(6)} - gone
    kept |= {_canary(D, i) for i in (4, 5)}
    every = [e async for e in store.read_all()]
    shown = {e.payload.decode() for e in every}
    assert not any(c in p for c in gone for p in shown)
    assert all(any(c in p for p in shown) for c in kept)
    assert [e.type for e in every if e.stream in (B, C)] == [STREAM_DELETED] * 2
    assert [e.position for e in every] == sorted(e.position for e in every)
    queried = [e async for e in store.read_query(TAG)]
    assert not any(c in e.payload.decode() for c in gone for e in queried)
    assert len(queried) == len(kept)
    assert [e.sequence async for e in store.read_stream(A)] == [3, 4, 5]
    assert [e.sequence async for e in store.read_stream(D)] == [4, 5]
    assert [e async for e in store.read_stream(B)] == []
    assert await _subscribed(store, len(every)) == every
    assert await archive.scan([c.encode() for c in gone]) == []
    assert {c for _, c in await archive.scan([c.encode() for c in kept])} <= kept
    assert await archive.verify() == []


async def test_scavenging_removes_archived_events_everywhere(store: EventStore) -> None:
    """After truncate, soft and hard delete and max_count are scavenged, read_all, read_query,
    read_stream, get_event, a subscription and Archive.scan show none of the removed
    events (the deletion events stay); the archive verifies and keeps its horizon."""
    archive = await _delete_and_archive(store)
    doomed = [e async for e in store.read_all() if e.stream in (A, B) and e.sequence < 3]
    horizon = archive.horizon
    dry = await scavenge(store, dry_run=True)
    assert dry.archived == 17 and await archive.scan([b"canary-b-0"]) != []
    report = await scavenge(store)
    assert report.archived == 17
    assert archive.horizon == horizon
    for e in doomed:
        assert await store.get_event(e.event_id) is None
    await _check_gone(store, archive)
    again = await scavenge(store)
    assert again.archived == 0 and again.events == 0
    assert await archive.collect_garbage() == []


async def test_a_run_cut_short_before_the_archive_rewrite_is_completed(
    store: EventStore,
) -> None:
    """A run that fails after the hot deletes, before the archive rewrite, leaves the
    archived events readable; the next run removes them."""
    archive = await _delete_and_archive(store)
    original = archive.remove_below

    async def crash(*args: object, **kwargs: object) -> int:
        raise OSError("killed before the archive rewrite")

    archive.remove_below = crash  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await scavenge(store)
    archive.remove_below = original  # type: ignore[method-assign]
    assert await archive.scan([b"canary-b-0"]) != []
    assert [e.sequence async for e in store.read_stream(A)] == [3, 4, 5]
    report = await scavenge(store)
    assert report.archived >= 16
    await _check_gone(store, archive)


async def test_a_rewrite_killed_before_its_manifest_leaves_orphans_only(
    store: EventStore, tmp_path: Path
) -> None:
    """A rewrite that dies after writing its new segment blobs, before the manifest, changes
    nothing readers see; the rerun completes and collects the orphans."""
    archive = await _delete_and_archive(store)
    blobs = archive.blobs
    original = blobs.put

    async def put(name: str, data: bytes) -> None:
        if name == "manifest.json":
            raise OSError("killed before the manifest")
        await original(name, data)

    blobs.put = put  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await scavenge(store)
    blobs.put = original  # type: ignore[method-assign]
    assert await archive.verify() == []
    await archive.refresh()
    assert await archive.scan([b"canary-b-0"]) != []
    await scavenge(store)
    await _check_gone(store, archive)
    names = sorted(p.name for p in (tmp_path / "arc" / "segments").iterdir())
    assert len(names) == 3 * len(archive.segments)


async def test_remove_events_by_id_keeps_ranges_and_block_numbers(tmp_path: Path) -> None:
    """Archive.remove_events drops exactly the given events (one manifest for the batch),
    keeps each segment's range, and get_event / read_stream no longer find them."""
    async with chronik.open_store("memory://") as store:
        await _fill(store)
        events = [e async for e in store.read_all()]
    archive = Archive(DirectoryBlobs(tmp_path / "arc"), block_events=3)
    await archive.open()
    await archive.seal(events[:15])
    await archive.seal(events[15:])
    ranges = [(s.first, s.last) for s in archive.segments]
    generation = archive.generation
    doomed = {e.event_id for e in events if e.stream == A} | {events[0].event_id}
    assert await archive.remove_events(doomed) == len(doomed)
    assert archive.generation == generation + 1
    assert [(s.first, s.last) for s in archive.segments] == ranges
    assert [e async for e in archive.read_all()] == [e for e in events if e.event_id not in doomed]
    assert [e async for e in archive.read_stream(A)] == []
    assert await archive.get_event(events[0].event_id) is None
    assert await archive.remove_events(doomed) == 0
    assert await archive.collect_garbage() == []


async def test_default_tenant_reads_through_the_archive_limit_after_the_filter(
    store: EventStore,
) -> None:
    """read_all and read_query with tenant="" and a limit, through an archive where other
    tenants' events come first, return the default tenant's first events, not fewer."""
    for i in range(10):
        other = chronik.StreamId("acct", f"o{i}", "acme")
        await store.append(other, [chronik.EventData("acct.moved", {"i": i}, tags=("all",))])
        await store.append(A, [chronik.EventData("acct.moved", {"i": i}, tags=("all",))])
    archive = store.archive
    assert archive is not None
    await archive_log(store, archive, retain_at_least=2, segment_events=5)
    mine = [e async for e in store.read_all(tenant="")][:4]
    assert len(mine) == 4 and all(e.stream == A for e in mine)
    assert [e async for e in store.read_all(limit=4, tenant="")] == mine
    assert [e async for e in store.read_query(TAG, limit=4, tenant="")] == mine
    theirs = [e async for e in store.read_all(limit=3, tenant="acme")]
    assert [e.stream.aggregate_id for e in theirs] == ["o0", "o1", "o2"]


async def test_compaction_over_an_archived_prefix(store: EventStore) -> None:
    """Compacting at a hot event hides the archived prefix at once and the scavenger removes
    it from the archive; compacting at an archived event is refused with a clear message."""
    await _fill(store)
    archive = store.archive
    assert archive is not None
    await archive_log(store, archive, retain_at_least=4, segment_events=7)  # E5 stays hot
    with pytest.raises(chronik.ValidationError, match="is archived; compact at a sequence"):
        await store.compact_stream(E, 2, chronik.EventData("acct.summary", {"n": 3}))
    summary = await store.compact_stream(E, 5, chronik.EventData("acct.summary", {"n": 6}))
    assert [e async for e in store.read_stream(E)] == [summary]
    await scavenge(store)
    assert await archive.scan([_canary(E, i).encode() for i in range(6)]) == []
    every = [e async for e in store.read_all() if e.stream == E]
    assert every == [summary]


async def test_another_process_holding_the_archiver_lease_defers_the_rewrite(
    store: EventStore,
) -> None:
    """While another process holds the archiver lease the run leaves the archive alone and
    says so (the truncation points are recorded); held in this process, or free, the run
    rewrites it."""
    archive = await _delete_and_archive(store)
    await store.acquire_lease("chronik.archiver", "elsewhere:1:archiver", 60)
    report = await scavenge(store)
    assert report.archived == 0 and report.errors[0][0] == "archive"
    assert "elsewhere:1:archiver" in report.errors[0][1]
    assert await archive.scan([b"canary-b-0"]) != []
    await store.release_lease("chronik.archiver", "elsewhere:1:archiver")
    here = f"{socket.gethostname()}:{os.getpid()}:archiver"
    await store.acquire_lease("chronik.archiver", here, 60)
    report = await scavenge(store)
    assert report.archived == 17 and report.errors == []
    await _check_gone(store, archive)


async def test_max_age_counts_archived_record_times(store: EventStore) -> None:
    """max_age keeps archived events younger than the cutoff (even of a stream with no hot
    event) and removes them once they are older; the truncation point is recorded."""
    await _fill(store)
    archive = store.archive
    assert archive is not None
    await archive_log(store, archive, retain_at_least=4, segment_events=7)
    await store.set_retention(A, Retention(max_age=3600))  # every event of A is archived
    assert (await scavenge(store)).archived == 0
    assert len([e async for e in store.read_stream(A)]) == 6
    later = time.time_ns() // 1000 + 7200 * 1_000_000
    assert (await scavenge(store, now_us=later)).archived == 6
    assert [e async for e in store.read_stream(A)] == []
    assert (await store.get_retention(A)).truncate_before == 6
    assert not [e async for e in store.read_all() if e.stream == A]
