"""DCB workloads of `make bench` (issue 17): the course-subscription speedrun beside
pyeventsourcing, and what a condition and a tag query cost as the log grows.

Lines (one JSON line each, bench's shape; value/raw are medians of the runs):

- ``dcb-speedrun-aggregates`` (postgres): one client, sequential; each iteration registers 10
  students and 10 courses and subscribes every student to every course (120 operations), for
  20 s per run (1 s with --quick; a run is at least one iteration), ids fresh per iteration, a
  pool of ONE connection on both sides, PostgreSQL's default durability. value = chronik ops/s
  with stream aggregates (a student and a course stream; a subscription reads both streams,
  then ONE unit of work, ``store.transaction()``, appends to each at the version read, as
  eventsourcing's ``save(student, course)`` does; bench/dcb_speedrun.py); raw = eventsourcing
  9.5 ops/s (``Application`` + ``eventsourcing.postgres``, bench/dcb_peer.py). ratio = chronik /
  peer.
- ``dcb-speedrun-dcb`` (postgres): the same with DCB. value = the examples/courses
  ``DcbDecider`` dispatched as commands through ``chronik.Chronik(...).dispatch`` (query, fold,
  decide, ``append_tagged`` under the condition); raw = eventsourcing's ``DCBApplication`` on
  ``eventsourcing.dcb.postgres_tt`` (B-tree tag table). ratio = chronik / peer (target >= 1.5).
- ``dcb-speedrun-dcb-store`` (postgres): the same decisions written against the store API
  (``read_query`` + ``append_tagged`` with an ``AppendCondition``), beside the same peer runs:
  the gap between this line and ``dcb-speedrun-dcb`` is the framework's own cost.
- ``dcb-condition`` (sqlite, postgres): with ``n`` tagged events stored, single-event
  ``append_tagged`` with a condition (a one-tag query, ``after`` = the previous append's
  position) vs the same appends without one, alternated in blocks on one store. value =
  conditional appends/s, raw = unconditional appends/s, ratio = value / raw (target >= 0.67:
  a condition costs at most 1.5x). chronik vs chronik: no raw driver in this comparison.
- ``dcb-tag-query`` (sqlite, postgres): ``read_query`` of one tag with 100 matches (read and
  decoded), median over 20 tags (5 with --quick), in a store of ``n`` events (value, ms) and
  one of ``small`` (raw, ms); ratio = raw / value (~1 when the cost follows the matches, not
  the log). Stores are filled through ``append_tagged`` (1,000 events per call), then reopened.
- Sizes: n = 100k, small = 10k (--quick: 5k / 1k); ``dcb-growth`` / ``pg-dcb-growth``: n = 1M.

The speedrun uses the examples' rules with MAX_COURSES raised to 10 (both sides: a course has
10 places, a student takes at most 10 courses), so no operation is refused. ``dcb-growth`` /
``pg-dcb-growth`` run the condition and tag-query lines at 1M events.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import chronik
from bench.__main__ import DURABILITY as SQLITE_DURABILITY
from bench.__main__ import PAYLOAD, log
from bench.dcb_speedrun import chronik_speedrun
from chronik import AppendCondition, EventData, Query

PG_DURABILITY = "PostgreSQL 15 defaults: fsync=on, synchronous_commit=on"


class DcbScale:
    """Sizes: ``n`` events in the big store, ``small`` in the small one, ``block`` appends per
    timed block, ``seconds`` per speedrun run."""

    def __init__(self, quick: bool, growth: bool = False) -> None:
        self.seconds = 1.0 if quick else 20.0  # a run is at least one iteration (120 ops)
        self.n = 1_000_000 if growth else (5_000 if quick else 100_000)
        self.small = 1_000 if quick else 10_000
        self.block = 50 if quick else 1_000
        self.queries = 5 if quick else 20


# --- condition and tag query as the log grows ----------------------------------------------


def tag(i: int, groups: int) -> str:
    """The tag of the ``i``-th event of a store with ``groups`` tags."""
    return f"g:{i % groups}"


async def fill(store: chronik.EventStore, n: int) -> None:
    """``n`` tagged events in appends of 1,000; tag g:k (k < n/100) on 100 events each."""
    groups = max(1, n // 100)
    for start in range(0, n, 1000):
        batch = [
            EventData("bench.tagged", PAYLOAD, tags=[tag(i, groups)])
            for i in range(start, min(n, start + 1000))
        ]
        await store.append_tagged(batch)


async def append_block(
    store: chronik.EventStore, count: int, groups: int, conditional: bool, after: Any
) -> tuple[float, Any]:
    """``count`` single-event appends, each carrying one existing group's tag; with
    ``conditional``, under the condition "no event of that tag after the previous append"."""
    start = time.perf_counter()
    for i in range(count):
        t = tag(i * 7919, groups)
        cond = AppendCondition(Query.of(tags=[t]), after) if conditional else None
        after = (
            await store.append_tagged([EventData("bench.tagged", PAYLOAD, tags=[t])], cond)
        ).position
    return count / (time.perf_counter() - start), after


async def query_ms(store: chronik.EventStore, n: int, queries: int, run: int) -> float:
    """The median ms of reading and decoding one tag's 100 events, over ``queries`` tags that
    no earlier run read while there are enough (so no cache has them), after one warm-up."""
    groups = max(1, n // 100)
    times = []
    for q in range(queries + 1):
        query = Query.of(tags=[f"g:{(run * (queries + 1) + q) % groups}"])
        start = time.perf_counter()
        got = 0
        async for e in store.read_query(query):
            e.json()
            got += 1
        if q:  # the first one warms the connection and the statement cache
            times.append((time.perf_counter() - start) * 1000)
        assert got >= 100, got  # 100, plus any the append blocks added
    return statistics.median(times)


async def growth_lines(
    big_url: str, small_url: str, sc: DcbScale, runs: int, settle: Callable[[str], Awaitable[None]]
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Fill both stores, reopen them (no cache warmed by the fill), then alternate: tag
    queries (small, big), appends (plain, conditional)."""
    t0 = time.perf_counter()
    for url, n in ((small_url, sc.small), (big_url, sc.n)):
        async with chronik.open_store(url) as store:
            await fill(store, n)
        await settle(url)
    log(f"  filled {sc.small:,} + {sc.n:,} events in {time.perf_counter() - t0:.1f} s")
    q_small, q_big, plain, cond = [], [], [], []
    async with chronik.open_store(small_url) as small, chronik.open_store(big_url) as big:
        after = None
        for r in range(runs):
            q_small.append(await query_ms(small, sc.small, sc.queries, r))
            q_big.append(await query_ms(big, sc.n, sc.queries, r))
            rate, after = await append_block(big, sc.block, sc.n // 100, False, after)
            plain.append(rate)
            rate, after = await append_block(big, sc.block, sc.n // 100, True, after)
            cond.append(rate)
    return q_big, q_small, cond, plain


# --- output and runners --------------------------------------------------------------------


def emit(
    workload: str,
    backend: str,
    unit: str,
    mine: list[float],
    theirs: list[float],
    *,
    durability: str,
    note: str,
    duration: bool = False,
    peer: str | None = None,
) -> None:
    """One JSON line: ratio = value / raw for rates, raw / value for durations (``duration``)."""
    value, raw = statistics.median(mine), statistics.median(theirs)
    line: dict[str, Any] = {
        "workload": workload,
        "backend": backend,
        "value": round(value, 2),
        "unit": unit,
        "raw": round(raw, 2),
        "ratio": round(raw / value if duration else value / raw, 3),
        "runs": [round(r, 2) for r in mine],
        "raw_runs": [round(r, 2) for r in theirs],
        "durability": durability,
    }
    if peer:
        line["peer"] = peer
    line["note"] = note
    print(json.dumps(line), flush=True)


def emit_growth(backend: str, sc: DcbScale, res: tuple[list[float], ...], durability: str) -> None:
    q_big, q_small, cond, plain = res
    emit(
        "dcb-condition", backend, "appends/s", cond, plain,
        durability=durability,
        note=f"single-event append_tagged with {sc.n:,} events stored, blocks of {sc.block}: "
        "value = with a condition (one-tag query, after = the previous append), raw = the same "
        "appends without one; ratio = value / raw (target >= 0.67)",
    )  # fmt: skip
    emit(
        "dcb-tag-query", backend, "ms", q_big, q_small,
        duration=True, durability=durability,
        note=f"read_query of one tag with 100 matches, decoded, median of {sc.queries} tags: "
        f"value = in {sc.n:,} events, raw = in {sc.small:,}; ratio = raw / value (target ~1)",
    )  # fmt: skip


async def _no_settle(url: str) -> None:
    return None


def run_sqlite(runs: int, quick: bool, growth: bool = False) -> None:
    """dcb-condition and dcb-tag-query on SQLite files."""
    sc = DcbScale(quick, growth)
    log(f"dcb condition + tag query, sqlite, {sc.n:,} events ...")
    d = tempfile.mkdtemp(prefix="chronik-bench-")
    try:
        big, small = (f"sqlite:///{os.path.join(d, n)}" for n in ("big.db", "small.db"))
        res = asyncio.run(growth_lines(big, small, sc, runs, _no_settle))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    emit_growth("sqlite", sc, res, SQLITE_DURABILITY)


def run_pg(runs: int, quick: bool, speedrun_too: bool = True, growth: bool = False) -> None:
    """The speedrun lines and dcb-condition / dcb-tag-query on a PostgreSQL server of bench's."""
    from bench import postgres as pgb
    from chronik.testing.services import PostgresService, ServiceNotStarted

    service = PostgresService(durable=True)
    try:
        service.start()
    except ServiceNotStarted as exc:
        log(f"postgres dcb: skipped ({exc})")
        service.stop()
        return
    pgb.BASE = service.url("postgres")
    try:
        sc = DcbScale(quick, growth)
        if speedrun_too:
            _speedrun_pg(runs, sc, pgb.BASE)
        log(f"postgres dcb condition + tag query, {sc.n:,} events ...")
        tag_ = str(time.time_ns())

        async def settle(url: str) -> None:
            import asyncpg

            schema = url.split("schema=")[1].split("&")[0]
            conn = await asyncpg.connect(pgb.BASE)
            for table in ("events", "event_tags", "streams"):
                await conn.execute(f'VACUUM (ANALYZE) "{schema}".{table}')
            await conn.close()

        big, small = pgb.url_for(f"big-{tag_}", 2), pgb.url_for(f"small-{tag_}", 2)
        emit_growth(
            "postgres", sc, asyncio.run(growth_lines(big, small, sc, runs, settle)), PG_DURABILITY
        )
    finally:
        service.stop()


def _speedrun_pg(runs: int, sc: DcbScale, base: str) -> None:
    from bench import postgres as pgb

    try:
        from bench import dcb_peer  # eventsourcing 9.5, a dev dependency
    except ImportError as exc:
        log(f"postgres dcb speedrun: skipped ({exc}; pip install -e '.[dev]')")
        return

    def mine(kind: str) -> Callable[[], float]:
        def run() -> float:
            url = pgb.url_for(f"{kind}-{time.time_ns()}", pool=1)
            return asyncio.run(chronik_speedrun(url, kind, sc.seconds))

        return run

    def theirs(fn: Callable[[str, str, float], float]) -> Callable[[], float]:
        return lambda: fn(base, f"peer-{time.time_ns()}", sc.seconds)

    def checkpoint() -> None:
        import psycopg

        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    peer = dcb_peer.PEER
    common = f"{sc.seconds:g} s per run, 10 students x 10 courses + 100 subscriptions per "
    common += "iteration, one client, pool of one connection both sides"
    log(f"postgres dcb speedrun, aggregates, {sc.seconds:g} s runs ...")
    a = alternate(runs, [theirs(dcb_peer.run_aggregates), mine("aggregates")], checkpoint)
    emit(
        "dcb-speedrun-aggregates", "postgres", "ops/s", a[1], a[0],
        durability=PG_DURABILITY,
        peer=peer, note=common + "; chronik: a student and a course stream, a subscription = "
        "one unit of work appending to both at their read versions; peer: Application, "
        "save(student, course); ratio = chronik / peer",
    )  # fmt: skip
    log(f"postgres dcb speedrun, DCB, {sc.seconds:g} s runs ...")
    b = alternate(runs, [theirs(dcb_peer.run_dcb), mine("dispatch"), mine("store")], checkpoint)
    for name, runs_, how in (
        ("dcb-speedrun-dcb", b[1], "examples/courses DcbDecider via Chronik.dispatch"),
        ("dcb-speedrun-dcb-store", b[2], "read_query + append_tagged with an AppendCondition"),
    ):
        emit(
            name, "postgres", "ops/s", runs_, b[0],
            durability=PG_DURABILITY,
            peer=peer, note=common + f"; chronik: {how}; peer: DCBApplication on "
            "eventsourcing.dcb.postgres_tt (B-tree tags), get_group + save; ratio = chronik / "
            "peer (target >= 1.5)",
        )  # fmt: skip


def alternate(
    runs: int, fns: list[Callable[[], float]], settle: Callable[[], None] | None = None
) -> list[list[float]]:
    """Each function's runs, alternated (the peer first) so that outside load hits all alike;
    ``settle`` runs before each one (a CHECKPOINT: no run pays for the previous run's writes)."""
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            if settle is not None:
                settle()
            out[i].append(fn())
    return out


NAMES = {"dcb", "pg-dcb", "dcb-growth", "pg-dcb-growth"}


def run(runs: int, quick: bool, only: set[str]) -> None:
    """The `make bench` hook: ``dcb`` = the SQLite lines, ``pg-dcb`` = the PostgreSQL ones
    (speedrun, condition, tag query); ``dcb-growth`` / ``pg-dcb-growth`` = condition and tag
    query at 1M events."""
    if "dcb" in only:
        run_sqlite(runs, quick)
    if "dcb-growth" in only:
        run_sqlite(runs, quick, growth=True)
    if "pg-dcb" in only:
        run_pg(runs, quick)
    if "pg-dcb-growth" in only:
        run_pg(runs, quick, speedrun_too=False, growth=True)
