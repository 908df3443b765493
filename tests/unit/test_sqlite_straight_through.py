"""SQLite writes straight through on an idle writer, and still group-commits concurrent units."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import chronik
from chronik import NO_STREAM, EventData, StreamId, WrongExpectedVersion
from chronik.store.base import WriteUnit
from chronik.store.sqlite.commit import STRAIGHT_LIMIT

pytestmark = pytest.mark.asyncio


def _event() -> list[EventData]:
    return [EventData("test.happened", {"n": 1})]


def _counting(store: chronik.EventStore) -> list[str]:
    """Record the steps of each write (``begin`` once per transaction)."""
    steps: list[str] = []

    def hook(step: str, unit: WriteUnit | None) -> None:
        steps.append(step)

    store.fault_hook = hook
    return steps


async def test_a_lone_append_commits_without_a_loop_iteration(tmp_path: Path) -> None:
    """With nothing else ready on the loop, an append is committed before it returns, without
    the loop running a single iteration (no timer fires in between)."""
    async with chronik.open_store(f"sqlite:///{tmp_path}/e.db") as store:
        await store.append(StreamId("t", "warm"), _event())
        fired: list[int] = []
        asyncio.get_running_loop().call_later(0, fired.append, 1)
        result = await store.append(StreamId("t", "a"), _event(), NO_STREAM)
        assert fired == [] and result.last_sequence == 0
        assert await store.stream_version(StreamId("t", "a")) == 0
        await asyncio.sleep(0.01)
        assert fired == [1]


async def test_a_run_of_appends_lets_the_loop_poll(tmp_path: Path) -> None:
    """A loop of appends yields to the loop at least every STRAIGHT_LIMIT + 1 appends, so
    timers and sockets are served during a long run of writes."""
    async with chronik.open_store(f"sqlite:///{tmp_path}/e.db") as store:
        fired: list[int] = []
        loop = asyncio.get_running_loop()
        loop.call_later(0, fired.append, 1)
        for i in range(STRAIGHT_LIMIT + 1):
            await store.append(StreamId("t", f"s{i}"), _event(), NO_STREAM)
        assert fired == [1]


async def test_concurrent_appends_share_one_transaction(tmp_path: Path) -> None:
    """Appends started together are committed as one batch (one BEGIN), each with its own
    result and its own expectation check."""
    async with chronik.open_store(f"sqlite:///{tmp_path}/e.db") as store:
        await store.append(StreamId("t", "taken"), _event())
        steps = _counting(store)
        calls = [store.append(StreamId("t", f"s{i}"), _event(), NO_STREAM) for i in range(20)]
        calls.append(store.append(StreamId("t", "taken"), _event(), NO_STREAM))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert steps.count("begin") == 1
        assert all(isinstance(r, chronik.AppendResult) for r in results[:20])
        assert isinstance(results[20], WrongExpectedVersion)
        assert len({r.position for r in results[:20] if isinstance(r, chronik.AppendResult)}) == 20


async def test_a_refused_append_written_straight_through_raises_typed(tmp_path: Path) -> None:
    """A refusal on the straight path raises the typed error and leaves the writer usable."""
    async with chronik.open_store(f"sqlite:///{tmp_path}/e.db") as store:
        stream = StreamId("t", "a")
        await store.append(stream, _event(), NO_STREAM)
        with pytest.raises(WrongExpectedVersion):
            await store.append(stream, _event(), NO_STREAM)
        assert (await store.append(stream, _event(), 0)).last_sequence == 1
        assert store.health.ok


async def test_a_lock_held_elsewhere_is_waited_for_in_the_queue(tmp_path: Path) -> None:
    """When another connection holds the write lock, the straight write falls back to the
    queue and commits once the lock is released, without blocking the loop meanwhile."""
    path = f"{tmp_path}/e.db"
    async with chronik.open_store(f"sqlite:///{path}") as store:
        await store.append(StreamId("t", "warm"), _event())
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        ticks: list[int] = []

        def release() -> None:
            ticks.append(len(ticks))
            other.execute("ROLLBACK")

        asyncio.get_running_loop().call_later(0.05, release)
        result = await store.append(StreamId("t", "a"), _event(), NO_STREAM)
        other.close()
        assert ticks == [0] and result.last_sequence == 0
