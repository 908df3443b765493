"""DCB on SQLite: the tag index is written with its events and only with them, tag queries and
conditions cost what they match, and conditions hold across stores sharing one file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import chronik
from chronik import AppendCondition, AppendConditionFailed, EventData, Query, QueryItem, StreamId
from chronik.store.sqlite.dcb import first_match, item_positions_sql


def _tag_rows(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT tag, position FROM chronik_event_tags ORDER BY 2, 1").fetchall()


async def test_tag_index_is_written_with_its_events_and_only_then(tmp_path: Path) -> None:
    """Tag rows are written for stream and tagged appends, once for a retried append (also one
    with ANY, which re-inserts and undoes), and not at all for a unit refused by its condition
    or by a stream expectation, whether alone or beside a unit that commits in the same batch."""
    path = tmp_path / "tags.db"
    s = StreamId("course", "c1")
    async with chronik.open_store(f"sqlite:///{path}") as store:
        stream_events = [EventData("course.defined", tags=["course:c1", "area:math"])]
        first = await store.append(s, stream_events)
        again = await store.append(s, stream_events)  # ANY: a retry, nothing stored twice
        assert again.positions == first.positions
        tagged = [EventData("seat.taken", tags=["course:c1", "student:s1"]), EventData("x")]
        result = await store.append_tagged(tagged)
        await store.append_tagged(tagged)
        p0, (p1, _p2) = first.position.commit, (p.commit for p in result.positions)
        want = [("area:math", p0), ("course:c1", p0), ("course:c1", p1), ("student:s1", p1)]
        assert _tag_rows(path) == want
        refused = store.append_tagged(
            [EventData("seat.taken", tags=["course:c1", "student:s2"])],
            AppendCondition(Query.of(tags=["course:c1"])),
        )

        async def expecting_wrong_version() -> None:
            async with store.transaction() as tx:
                tx.expect(s, 5)
                tx.append(StreamId("ledger", "l1"), [EventData("x", tags=["ledger:l1"])])

        passing = store.append(StreamId("course", "c2"), [EventData("y", tags=["course:c2"])])
        outcomes = await asyncio.gather(
            refused, expecting_wrong_version(), passing, return_exceptions=True
        )
        assert isinstance(outcomes[0], AppendConditionFailed)
        assert isinstance(outcomes[1], chronik.WrongExpectedVersion)
        assert isinstance(outcomes[2], chronik.AppendResult)
        assert _tag_rows(path) == [*want, ("course:c2", outcomes[2].position.commit)]


def _steps(conn: sqlite3.Connection, run: Callable[..., object], *args: object) -> int:
    """The SQLite VM steps (in units of 10 instructions) ``run(*args)`` takes on ``conn``."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    conn.set_progress_handler(tick, 10)
    try:
        run(*args)
    finally:
        conn.set_progress_handler(None, 10)
    return count[0]


def _fetch(conn: sqlite3.Connection, sql: str, params: list[object]) -> list[object]:
    return conn.execute(sql, params).fetchall()


async def test_tag_queries_and_conditions_cost_what_they_match(tmp_path: Path) -> None:
    """A tag item's read and its condition check take about as many SQLite steps with 30,000
    other events in the log as with 1,000 (the same few events carry the item's first tag):
    they walk the tag index, not the log, far cheaper than one pass over the events."""
    path = tmp_path / "cost.db"
    item = QueryItem(["seat.taken"], ["course:c1", "student:s1"])
    query = Query([item, QueryItem(tags=["course:nowhere"])])

    async def noise(store: chronik.EventStore, n: int) -> None:
        for _ in range(0, n, 500):
            await store.append_tagged(
                [EventData("seat.taken", tags=[f"course:c{i % 50 + 2}"]) for i in range(250)]
            )
            await store.append(
                StreamId("other", "o1"), [EventData("seat.taken") for _ in range(250)]
            )

    costs = []
    async with chronik.open_store(f"sqlite:///{path}") as store:
        # the first tag without the second: walked, filtered by the index probe
        await store.append_tagged(
            [EventData("seat.taken", tags=["course:c1", f"student:x{i}"]) for i in range(5)]
        )
        for n in (1_000, 30_000):
            await noise(store, n)
            await store.append_tagged([EventData("seat.taken", tags=["course:c1", "student:s1"])])
            await noise(store, 50)  # no match after the last one
            matches = [e async for e in store.read_query(query)]
            last = matches[-1].position
            with sqlite3.connect(path) as conn:
                read_sql, params = item_positions_sql(item, None, None, False, 1000)
                reading = _steps(conn, _fetch, conn, read_sql, params)
                checking = _steps(conn, first_match, conn, query, last)
                assert first_match(conn, query, None) == (0, matches[0].position.commit)
                assert first_match(conn, query, last) is None
            costs.append((len(matches), reading, checking))
    (m_small, read_small, check_small), (m_big, read_big, check_big) = costs
    assert m_small == 1 and m_big == 2
    assert read_big <= 2 * read_small + 10 and check_big <= 2 * check_small + 10
    with sqlite3.connect(path) as conn:
        scan = _steps(conn, _fetch, conn, "SELECT count(payload) FROM chronik_events", [])
    assert read_big * 20 < scan


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_two_stores_on_one_file_claim_a_name_once(tmp_path: Path, synchronous: str) -> None:
    """Two stores writing the same file (as two processes do) race uniqueness claims on one
    username: exactly one claim wins; claims on other names all succeed."""
    url = f"sqlite:///{tmp_path}/shared.db?synchronous={synchronous}"
    async with chronik.open_store(url) as a, chronik.open_store(url) as b:

        async def claim(store: chronik.EventStore, name: str) -> bool:
            try:
                await store.append_tagged(
                    [EventData("username.claimed", tags=[f"username:{name}"])],
                    AppendCondition(Query.of(["username.claimed"], [f"username:{name}"])),
                )
            except AppendConditionFailed:
                return False
            return True

        won = await asyncio.gather(*(claim((a, b)[i % 2], "ada") for i in range(12)))
        assert won.count(True) == 1
        others = await asyncio.gather(*(claim((a, b)[i % 2], f"u{i}") for i in range(12)))
        assert all(others)
        assert len([e async for e in b.read_query(Query.of(tags=["username:ada"]))]) == 1
