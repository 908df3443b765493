"""SQLite-specific behaviour: durability modes, locks held elsewhere, schema versions, WAL."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

import chronik
from chronik.store.sqlite import WAL_LIMIT
from chronik.store.sqlite.schema import SCHEMA_VERSION


def ev(n: int = 0) -> chronik.EventData:
    return chronik.EventData("thing.happened", {"n": n})


async def test_synchronous_full_writes_on_the_writer_thread(tmp_path: Path) -> None:
    """synchronous=full commits on a thread, still group-commits and keeps every semantic."""
    url = f"sqlite:///{tmp_path}/full.db?synchronous=full"
    async with chronik.open_store(url) as store:
        streams = [chronik.StreamId("acct", f"a{i}") for i in range(16)]
        results = await asyncio.gather(
            *(store.append(s, [ev(i)], chronik.NO_STREAM) for i, s in enumerate(streams))
        )
        assert sorted(r.position for r in results) == [r.position for r in results]
        losers = await asyncio.gather(
            *(store.append(streams[0], [ev()], 0) for _ in range(5)), return_exceptions=True
        )
        assert sum(isinstance(x, chronik.AppendResult) for x in losers) == 1
        assert sum(isinstance(x, chronik.WrongExpectedVersion) for x in losers) == 4
        with sqlite3.connect(tmp_path / "full.db") as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    async with chronik.open_store(url) as store:
        assert await store.stream_version(streams[0]) == 1
        assert len([e async for e in store.read_all()]) == 17


async def test_a_lock_held_elsewhere_is_waited_for_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    """While another connection holds the write lock, appends wait on asyncio, then succeed."""
    path = tmp_path / "locked.db"
    async with chronik.open_store(f"sqlite:///{path}") as store:
        await store.head()  # schema created
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        append = asyncio.create_task(store.append(chronik.StreamId("a", "b"), [ev()]))
        await asyncio.sleep(0.3)
        assert not append.done()
        assert ticks > 20  # the loop kept running while the append waited
        other.execute("COMMIT")
        result = await asyncio.wait_for(append, 2)
        tick_task.cancel()
        assert result.first_sequence == 0
        other.close()


async def test_a_lock_held_past_the_busy_timeout_is_store_unavailable(tmp_path: Path) -> None:
    """An append that cannot get the lock within busy_timeout_ms fails typed, writing nothing."""
    path = tmp_path / "stuck.db"
    async with chronik.open_store(f"sqlite:///{path}?busy_timeout_ms=200") as store:
        await store.head()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(chronik.StoreUnavailable):
            await store.append(chronik.StreamId("a", "b"), [ev()])
        assert 0.15 < time.monotonic() - started < 2
        other.execute("ROLLBACK")
        other.close()
        assert await store.head() is None
        await store.append(chronik.StreamId("a", "b"), [ev()], chronik.NO_STREAM)


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file migrated by a newer chronik is refused with ConfigurationError, untouched."""
    path = tmp_path / "future.db"
    async with chronik.open_store(f"sqlite:///{path}") as store:
        await store.append(chronik.StreamId("a", "b"), [ev()])
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO chronik_schema (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    store = chronik.open_store(f"sqlite:///{path}")
    with pytest.raises(chronik.ConfigurationError, match="newer"):
        await store.open()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM chronik_events").fetchone()[0] == 1


async def test_reopening_keeps_schema_and_events(tmp_path: Path) -> None:
    """Opening an existing file runs no migration twice and reads what was written."""
    url = f"sqlite:///{tmp_path}/again.db"
    for round_ in range(3):
        async with chronik.open_store(url) as store:
            await store.append(
                chronik.StreamId("a", "b"),
                [ev(round_)],
                round_ - 1 if round_ else chronik.NO_STREAM,
            )
    with sqlite3.connect(tmp_path / "again.db") as raw:
        versions = raw.execute("SELECT version FROM chronik_schema ORDER BY version").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    async with chronik.open_store(url) as store:
        assert [e.json()["n"] async for e in store.read_stream(chronik.StreamId("a", "b"))] == [
            0,
            1,
            2,
        ]


async def test_wal_stays_bounded_under_sustained_writes(tmp_path: Path) -> None:
    """Writing 40 MB back to back keeps the WAL near its limit (checkpoints keep up)."""
    path = tmp_path / "wal.db"
    async with chronik.open_store(f"sqlite:///{path}") as store:
        big = {"blob": "x" * 50_000}
        for i in range(800):
            await store.append(chronik.StreamId("a", f"s{i}"), [chronik.EventData("t", big)])
        assert Path(f"{path}-wal").stat().st_size < 1.5 * WAL_LIMIT
        assert len([e async for e in store.read_all(types=["t"])]) == 800


async def test_closing_waits_for_pending_appends(tmp_path: Path) -> None:
    """Appends queued before close are committed before the store closes."""
    url = f"sqlite:///{tmp_path}/drain.db"
    store = chronik.open_store(url)
    await store.open()
    tasks = [
        asyncio.create_task(store.append(chronik.StreamId("a", f"s{i}"), [ev(i)]))
        for i in range(50)
    ]
    await asyncio.sleep(0)
    await store.close()
    assert all(t.done() and not t.exception() for t in tasks)
    with pytest.raises(chronik.StoreClosed):
        await store.append(chronik.StreamId("a", "late"), [ev()])
    async with chronik.open_store(url) as again:
        assert len([e async for e in again.read_all()]) == 50
