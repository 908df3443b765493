"""The production shape: a PostgreSQL store archived into an S3-compatible bucket (a real moto
server): the archiver seals and drops, a second process's view of store and archive reads
everything once in order (refreshing its stale archive), and concurrent writers during
archiving lose nothing."""

from __future__ import annotations

import asyncio

import chronik
from chronik.archive import Archive
from chronik.lifecycle.archiver import archive_log
from chronik.store.base import EventStore
from chronik.testing.s3_server import S3Service, s3_server

__all__ = ["s3_server"]

S = [chronik.StreamId("ledger", f"l{i}") for i in range(4)]


async def _write(store: EventStore, start: int, n: int) -> None:
    for i in range(start, start + n):
        await store.append(S[i % 4], [chronik.EventData("ledger.booked", {"i": i})])


async def test_postgres_archived_to_s3_reads_as_one_log(
    postgres_url: str, s3_server: S3Service
) -> None:
    """Seal into S3 while writers append; another store object with its own (stale) archive
    view reads all events once in position order, streams both ways, and a subscription."""
    bucket = "chronik-archived-pg"
    maker = s3_server.blobs(bucket)
    await maker.create_bucket()
    await maker.close()
    archive = Archive(s3_server.blobs(bucket, "ledger/"))
    await archive.open()
    async with chronik.open_store(postgres_url) as store:
        await _write(store, 0, 200)
        reader_archive = Archive(s3_server.blobs(bucket, "ledger/"))
        await reader_archive.open()  # empty now: stale once the archiver runs
        writers = asyncio.gather(*(_write(store, 1000 * k, 25) for k in range(1, 5)))
        report = await archive_log(store, archive, retain_at_least=20, segment_events=60)
        await writers
        assert report.events >= 180 and report.segments >= 3
        store.attach_archive(None)
        hot = [e async for e in store.read_all()]
        assert len(hot) < 320 - 150
        async with chronik.open_store(postgres_url) as other:
            other.attach_archive(reader_archive)
            events = [e async for e in other.read_all()]
            assert len(events) == 300 and len({e.event_id for e in events}) == 300
            assert [e.position for e in events] == sorted(e.position for e in events)
            assert reader_archive.horizon == archive.horizon  # it refreshed
            for s in S:
                seqs = [e.sequence async for e in other.read_stream(s)]
                assert seqs == list(range(sum(1 for e in events if e.stream == s)))
                back = [e.sequence async for e in other.read_stream(s, backward=True)]
                assert back == seqs[::-1]
            got: list[str] = []
            async with other.subscribe(batch_size=50) as sub:
                async for e in sub:
                    got.append(e.event_id)
                    if len(got) == 300:
                        break
            assert got == [e.event_id for e in events]
    await reader_archive.close()
    await archive.close()
