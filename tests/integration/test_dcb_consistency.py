"""The DCB consistency scenario on every store (memory, SQLite, PostgreSQL, Redis, MySQL and
LMDB): 20 concurrent writers make conditional appends from what they read; the whole log then
shows no match slipped in between a read and its append (0 violations) and no append failed
without a real match (0 false conflicts). ``make test`` runs 20 writers x 1 s x 3 seeds per
backend (over two processes: 2 s, one seed); ``make soak`` (CHRONIK_SOAK=10) 20 writers x 10 s
x 10 seeds.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import chronik
from chronik import AppendCondition, EventData, Query, QueryItem
from chronik.testing.dcb_scenario import (
    Attempt,
    ScenarioReport,
    check_log,
    dcb_missing,
    run_in_processes,
    run_writers,
)
from chronik.testing.mariadb_server import MariaDBService
from chronik.testing.redis_server import RedisService
from chronik.testing.services import PostgresService

WRITERS = 20
_schemas = itertools.count(1)


def sizes(scale: int) -> tuple[float, int]:
    """(seconds, seeds): 1 s x 3 seeds in make test (thousands of attempts each), CHRONIK_SOAK s
    x CHRONIK_SOAK seeds in soak."""
    return (1.0, 3) if scale == 1 else (float(scale), scale)


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis", "mysql", "lmdb"])
async def make_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], str]]:
    """Fresh store URLs of one backend, after a probe on a throwaway store (a condition that
    must fail, then a query read) says the adapter runs DCB at all."""
    backend: str = request.param
    count = itertools.count()
    if backend == "memory":

        def make() -> str:
            return "memory://"

    elif backend == "sqlite":

        def make() -> str:
            return f"sqlite:///{tmp_path}/dcb{next(count)}.db"

    elif backend == "lmdb":

        def make() -> str:
            return f"lmdb:///{tmp_path}/dcb{next(count)}"

    elif backend == "redis":
        redis: RedisService = request.getfixturevalue("redis_server")

        def make() -> str:
            return redis.url(prefix=f"dcbc{next(_schemas)}")

    elif backend == "mysql":
        mariadb: MariaDBService = request.getfixturevalue("mariadb_server")

        def make() -> str:
            return mariadb.url(f"dcbc{next(_schemas)}")

    else:
        server: PostgresService = request.getfixturevalue("postgres_server")
        if not server.running:
            server.start()

        def make() -> str:
            return server.url("postgres", schema=f"dcbc{next(_schemas)}")

    async with chronik.open_store(make()) as probe:
        reason = await dcb_missing(probe)
    if reason is not None:
        pytest.fail(f"{backend} fails the DCB probe: {reason}")
    yield make


def assert_consistent(report: ScenarioReport) -> None:
    """No violation, no false conflict, no misreported refusal, and the run really raced."""
    print(report.summary())  # the figures, shown with -s
    assert report.violations == [], report.violations[:5]
    assert report.false_conflicts == [], report.false_conflicts[:5]
    assert report.misreported == [], report.misreported[:5]
    assert report.appended > 0 and report.conflicts > 0, report.summary()


@pytest.mark.drill
async def test_concurrent_writers_never_let_a_match_slip_in(
    make_url: Callable[[], str], scale: int
) -> None:
    """20 concurrent writers on one store, several seeds: every successful conditional append
    has no event its query matches between its ``after`` and itself, and every refusal names
    a real match after ``after`` (disjoint queries never fail each other)."""
    seconds, seeds = sizes(scale)
    for seed in range(seeds):
        async with chronik.open_store(make_url()) as store:
            attempts = await run_writers(store, writers=WRITERS, seconds=seconds, seed=seed)
            assert_consistent(await check_log(store, attempts, seconds))


@pytest.mark.drill
@pytest.mark.parametrize("make_url", ["sqlite", "postgres", "redis", "mysql"], indirect=True)
async def test_two_processes_never_let_a_match_slip_in(
    make_url: Callable[[], str], scale: int
) -> None:
    """The same writers split over two spawned processes sharing one database (where real
    races live): 0 violations, 0 false conflicts."""
    url = make_url()
    seconds, seeds = sizes(scale)
    seconds = max(seconds, 2.0)  # one seed in make test: 2 s of it
    for seed in range(1 if scale == 1 else seeds):
        url = url if seed == 0 else make_url()
        async with chronik.open_store(url) as store:
            attempts = await run_in_processes(  # both start 1 s from now (spawned in ~0.2 s)
                url, writers=WRITERS, seconds=seconds, seed=seed, startup=1.0
            )
            assert {a.writer[:2] for a in attempts} == {"p0", "p1"}
            assert_consistent(await check_log(store, attempts, seconds))


async def test_the_check_finds_a_slipped_match_and_a_false_conflict() -> None:
    """``check_log`` reports a success whose query matched an event between its ``after`` and
    itself, a refusal naming no match, and a refusal naming a later match than the first."""
    c1 = Query([QueryItem(tags=["course:c1"])])
    async with chronik.open_store("memory://") as store:
        a = await store.append_tagged([EventData("x", tags=["course:c1"])])
        b = await store.append_tagged([EventData("x", tags=["course:c1"])])
        other = await store.append_tagged([EventData("x", tags=["course:c2"])])
        late = [EventData("x", tags=["course:c1"])]
        c = await store.append_tagged(late, AppendCondition(c1, b.position))
        honest = [
            Attempt(c1, b.position, (late[0].event_id,), c.positions),
            Attempt(c1, a.position, ("r1",), (), b.position, 0),
        ]
        assert_report = await check_log(store, honest, 1.0)
        assert (assert_report.violations, assert_report.false_conflicts) == ([], [])
        assert assert_report.misreported == []
        lying = [
            Attempt(c1, a.position, (late[0].event_id,), c.positions),  # b slipped in
            Attempt(c1, b.position, ("r2",), (), other.position, 0),  # c2 does not match
            Attempt(c1, None, ("r3",), (), b.position, 0),  # the first match is a, not b
        ]
        report = await check_log(store, lying, 1.0)
    assert len(report.violations) == 1 and "attempt 0" in report.violations[0]
    assert len(report.false_conflicts) == 1 and "attempt 1" in report.false_conflicts[0]
    assert len(report.misreported) == 1 and "attempt 2" in report.misreported[0]
