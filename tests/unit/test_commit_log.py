"""The store's log of its own appends (``CommitLog``) and the projection shortcut built on it:
a processor that follows none of the types this process appended moves on without a read; an
append by another process (a gap in the positions) or one of its types means a read again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.messages import AppendResult, Position
from chronik.projections import Projection, ProjectionProcessor, ReadModel, Table, query
from chronik.store.commit_log import CommitLog
from chronik.store.records import AppendRequest, PreparedEvent, WriteUnit

S = chronik.StreamId("log", "s")


def _unit(first: int, types: list[str]) -> tuple[WriteUnit, list[AppendResult]]:
    """A committed one-append unit of events of ``types`` at positions first, first + 1, ..."""
    events = [
        PreparedEvent(f"e{first + i}", t, 1, b"{}", None, "application/json", ())
        for i, t in enumerate(types)
    ]
    positions = tuple(Position(first + i) for i in range(len(types)))
    result = AppendResult(S, 0, len(types) - 1, positions[-1], positions)
    return WriteUnit([AppendRequest(S, events, chronik.ANY)], [], []), [result]


def _log(*units: tuple[int, list[str]]) -> CommitLog:
    log = CommitLog()
    log.asked = True  # as once a reader has asked
    for first, types in units:
        log.add(*_unit(first, types))
    return log


def test_the_types_after_a_position_inside_a_gapless_run() -> None:
    """Every range after the position counts; the answer ends at the last noted position."""
    log = _log((1, ["a", "a"]), (3, ["b"]), (4, ["c", "a"]))
    assert log.types_after(Position(0)) == (Position(5), frozenset("abc"))
    assert log.types_after(Position(3)) == (Position(5), frozenset("ac"))
    assert log.types_after(Position(4)) == (Position(5), frozenset("ac"))


def test_nothing_is_noted_until_a_reader_asks() -> None:
    """A store nobody asks pays nothing: appends before the first question are not noted, so
    that question (and any about them later) has no answer; appends after it are."""
    log = CommitLog()
    log.add(*_unit(1, ["a"]))
    assert log.types_after(Position(0)) is None and log.last is None
    log.add(*_unit(2, ["b"]))
    assert log.types_after(Position(0)) is None
    assert log.types_after(Position(1)) == (Position(2), frozenset("b"))


def test_no_answer_at_or_past_the_end_or_before_the_log() -> None:
    """At the last noted position (another process may have appended since), past it, before
    the first range and for a position with an index: None."""
    log = _log((10, ["a"]), (11, ["b"]))
    assert log.types_after(Position(11)) is None
    assert log.types_after(Position(12)) is None
    assert log.types_after(Position(8)) is None
    assert log.types_after(Position(10, 1)) is None
    assert CommitLog().types_after(Position(1)) is None


def test_a_gap_starts_the_log_over() -> None:
    """Positions not noted here (another process's append) between two ranges: only what
    follows the gap is known."""
    log = _log((1, ["a"]), (2, ["b"]), (5, ["c"]))
    assert log.types_after(Position(1)) is None
    assert log.types_after(Position(4)) == (Position(5), frozenset("c"))


def test_an_idempotent_retry_notes_nothing_and_ranges_merge() -> None:
    """A result without positions (nothing written) is skipped; a range of known types extends
    the one before it, so the log reaches back further."""
    log = CommitLog(size=2)
    log.asked = True
    unit, _ = _unit(1, ["a"])
    log.add(unit, [AppendResult(S, 0, 0, Position(1))])
    assert log.types_after(Position(0)) is None
    for first in range(1, 50):
        log.add(*_unit(first, ["a"]))
    log.add(*_unit(50, ["b"]))
    assert log.types_after(Position(0)) == (Position(50), frozenset("ab"))


ROWS = Table("seen", {"id": str, "n": int}, primary_key="id")


def _projection() -> Projection:
    p = Projection("only_a", tables=[ROWS])

    @p.on("a")
    async def on_a(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("seen", id="a")
        rm.upsert("seen", id="a", n=(row["n"] if row else 0) + 1)

    return p


async def _append(store: Any, etype: str) -> Position:
    r = await store.append(S, [chronik.EventData(etype, {})])
    return r.position  # type: ignore[no-any-return]


async def test_a_processor_skips_this_process_s_other_types_without_a_read(
    tmp_path: Path,
) -> None:
    """Events of types the projection does not follow, appended by its own store, move it on
    with no page read; an event of its type, or another process's append, is read."""
    url = f"sqlite:///{tmp_path}/skip.db"
    async with chronik.open_store(url) as store, chronik.open_store(url) as other:
        reads = 0
        read_page = store.read_page

        async def counted(*args: Any, **kw: Any) -> Any:
            nonlocal reads
            reads += 1
            return await read_page(*args, **kw)

        store.read_page = counted  # type: ignore[method-assign]
        await _append(store, "a")
        async with ProjectionProcessor(store, _projection(), heartbeat=30, lease_ttl=100) as proc:
            async with asyncio.timeout(10):
                await proc.wait_for(await _append(store, "a"))
                before = reads
                for _ in range(20):
                    await proc.wait_for(await _append(store, "b"))
                assert reads == before  # moved on, unread
                await proc.wait_for(await _append(other, "a"))  # another process's: read
                assert reads > before
                await proc.wait_for(await _append(store, "a"))
        assert await query(store, "only_a", "seen") == [{"id": "a", "n": 4}]


@pytest.mark.parametrize("etype", ["a", "b"])
async def test_after_another_process_appended_this_one_reads_again(
    tmp_path: Path, etype: str
) -> None:
    """This process's append right after another's (a gap in its log): the processor reads,
    and sees the other process's event of its type."""
    url = f"sqlite:///{tmp_path}/gap-{etype}.db"
    async with chronik.open_store(url) as store, chronik.open_store(url) as other:
        await _append(store, "b")
        async with ProjectionProcessor(store, _projection(), heartbeat=30, lease_ttl=100) as proc:
            async with asyncio.timeout(10):
                await proc.wait_for(await _append(store, "b"))
                await _append(other, "a")
                await proc.wait_for(await _append(store, etype))
        expected = 2 if etype == "a" else 1
        assert await query(store, "only_a", "seen") == [{"id": "a", "n": expected}]


async def test_a_live_processor_takes_the_head_from_its_short_pages(tmp_path: Path) -> None:
    """Following its own type live (short pages), the processor asks the store for the head
    only through the page read, which saw it: no head query of its own; its lag is 0."""
    async with chronik.open_store(f"sqlite:///{tmp_path}/head.db") as store:
        await _append(store, "a")
        async with ProjectionProcessor(store, _projection(), heartbeat=30, lease_ttl=100) as proc:
            async with asyncio.timeout(10):
                await proc.wait_for(await _append(store, "a"))
                heads = 0
                head = store.head

                async def counted() -> Any:
                    nonlocal heads
                    heads += 1
                    return await head()

                store.head = counted  # type: ignore[method-assign]
                for _ in range(10):
                    last = await _append(store, "a")
                    await proc.wait_for(last)
                assert heads == 0 and proc.head == last
