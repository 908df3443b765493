"""Idle processors and the store's own commits: a change signal asks each waiter whether it
wants a commit of the store object itself (``ChangeSignal.set_for_own_commit``), so a
projection sleeps through appends of types it does not follow; its own types, another
process's append and a ``wait_for`` still wake it at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.projections import ProjectionProcessor, query
from chronik.store.lifecycle import ChangeSignal
from tests.unit.test_commit_log import _append, _projection


def _url(tmp_path: Path, kind: str) -> str:
    return f"sqlite:///{tmp_path}/events.db" if kind == "sqlite" else "memory://"


def _count_rounds(proc: ProjectionProcessor) -> list[int]:
    """Count the processor's lane steps (one per lane per round)."""
    rounds = [0]
    step = proc._step

    async def counted(lane: Any) -> bool:
        rounds[0] += 1
        return await step(lane)

    proc._step = counted  # type: ignore[method-assign]
    return rounds


async def _seen(store: Any, n: int, seconds: float = 5.0) -> None:
    """Wait until the projection has applied ``n`` events of type a (long before its
    30 s heartbeat could have woken it)."""
    deadline = time.monotonic() + seconds
    while await query(store, "only_a", "seen") != [{"id": "a", "n": n}]:
        assert time.monotonic() < deadline, await query(store, "only_a", "seen")
        await asyncio.sleep(0.01)


async def _settled(proc: ProjectionProcessor) -> None:
    """Until the processor waits idle."""
    while proc._waiting is None:
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("url", ["sqlite", "memory"])
async def test_a_processor_sleeps_through_its_own_store_s_other_types(
    tmp_path: Path, url: str
) -> None:
    """Twenty appends of a type the projection does not follow run no round at all; an
    append of its type wakes it at once (its heartbeat is 30 s)."""
    async with chronik.open_store(_url(tmp_path, url)) as store:
        await _append(store, "a")
        async with ProjectionProcessor(store, _projection(), heartbeat=30, lease_ttl=100) as proc:
            await proc.wait_for(await _append(store, "a"))
            await _settled(proc)
            rounds = _count_rounds(proc)
            for _ in range(20):
                await _append(store, "b")
            await asyncio.sleep(0.05)
            assert rounds[0] == 0
            await _append(store, "a")
            await _seen(store, 3)
            assert rounds[0] >= 1


async def test_another_process_s_append_is_read_after_own_commits_were_slept_through(
    tmp_path: Path,
) -> None:
    """After sleeping through its own store's append of another type, the wake-up for another
    process's append (seen by the poll) reads: the own commit log cannot vouch for what
    another process appended after it."""
    url = f"sqlite:///{tmp_path}/other.db"
    async with chronik.open_store(url) as store, chronik.open_store(url) as other:
        await _append(store, "a")
        async with ProjectionProcessor(store, _projection(), heartbeat=30, lease_ttl=100) as proc:
            await proc.wait_for(await _append(store, "a"))
            await _settled(proc)
            await _append(store, "b")
            await _append(other, "a")
            await _seen(store, 3)


@pytest.mark.parametrize("url", ["sqlite", "memory"])
async def test_wait_for_a_position_it_slept_past_returns_at_once(tmp_path: Path, url: str) -> None:
    """A reader waiting for the position of an append the processor slept through gets it
    without waiting for the heartbeat (the memory store has no poll to wake it)."""
    async with chronik.open_store(_url(tmp_path, url)) as store:
        await _append(store, "a")
        async with ProjectionProcessor(store, _projection(), heartbeat=30, lease_ttl=100) as proc:
            await proc.wait_for(await _append(store, "a"))
            await _settled(proc)
            last = await _append(store, "b")
            async with asyncio.timeout(5):
                await proc.wait_for(last)
            assert proc.position is not None and proc.position >= last


def _run(body: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await body(asyncio.get_running_loop())

    asyncio.run(main())


def test_an_unwanted_own_commit_keeps_the_future_for_the_next_change() -> None:
    """At an own commit a future whose question says no stays registered (on the store's
    list, shared by its signals); the next other change resolves it (False: not an own
    commit); one whose question says yes resolves True; ``forget`` on the old signal works."""

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        waiting: list[Any] = []
        first = ChangeSignal(waiting)
        no, yes, dropped = loop.create_future(), loop.create_future(), loop.create_future()
        first.resolve_on_set(no, lambda: False)
        first.resolve_on_set(yes, lambda: True)
        first.resolve_on_set(dropped, lambda: False)
        first.set_for_own_commit()
        assert yes.result() is True and not no.done() and not dropped.done()
        first.forget(dropped)
        assert [f for f, _ in waiting] == [no]
        second = ChangeSignal(waiting)
        second.set()
        assert no.result() is False and waiting == []

    _run(body)


def test_a_question_that_fails_wakes_its_waiter() -> None:
    """A ``wanted`` that raises resolves its future (the waiter finds out itself)."""

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        signal = ChangeSignal()
        fut = loop.create_future()

        def broken() -> bool:
            raise RuntimeError("boom")

        signal.resolve_on_set(fut, broken)
        signal.set_for_own_commit()
        assert fut.result() is True

    _run(body)


async def test_a_store_notify_reaches_futures_an_earlier_commit_kept() -> None:
    """A future kept by an own commit is resolved by the store's next change even if nobody
    took a new change signal since (the store sets one for its kept futures)."""
    async with chronik.open_store("memory://") as store:
        fut = asyncio.get_running_loop().create_future()
        store.change_signal().resolve_on_set(fut, lambda: False)
        await _append(store, "b")
        assert not fut.done()
        store.wake_readers()
        assert fut.result() is False


async def test_a_poll_that_sees_another_process_s_append_after_a_quiet_wake_is_not_lost(
    tmp_path: Path,
) -> None:
    """A quiet wake-up (a reader's ``wait_for``), then a poll that sees another process's
    append before the woken processor runs: its round reads (the poll made the commit log
    forget), so the append is applied long before the 30 s heartbeat."""
    from chronik.store.sqlite import SQLiteEventStore

    url = f"sqlite:///{tmp_path}/race.db"
    store = SQLiteEventStore(url, poll_interval=3600)  # only the poll the test runs by hand
    async with store, chronik.open_store(url) as other:
        await _append(store, "a")
        async with ProjectionProcessor(store, _projection(), heartbeat=30, lease_ttl=100) as proc:
            await proc.wait_for(await _append(store, "a"))
            await _settled(proc)
            mine = await _append(store, "b")  # slept through
            await _append(other, "a")
            proc._wake(quiet=True)  # as wait_for(mine) does
            store._changed()  # the poll, before the processor's task runs
            await proc.wait_for(mine)
            await _seen(store, 3)
