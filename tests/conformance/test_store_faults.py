"""Random units of work with random faults at random steps, concurrently, on every adapter.

Each example opens the store, runs a handful of units at once (so SQLite's group commit holds
several of them in one batch), some with an exception of some type injected at some step, some
with a value no column can hold, some cancelled by their caller; then checks that every call
ended (typed) in time, that each unit is stored whole or not at all (not at all if it failed
with a known outcome, whole if it succeeded), that units no fault touched all committed, and
that the store still works (a fresh write succeeds, health is ok, SQLite's integrity check
passes, no PostgreSQL session is left idle in a transaction).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chronik
from chronik import EventData, Position, Snapshot, StreamId
from chronik.store.base import EventStore, TableSpec, TableWrite, WriteUnit
from chronik.testing.faults import (
    WRITE_STEPS,
    inject,
    postgres_connection_lost,
    sqlite_error,
    touches,
)
from tests.conftest import SCALE

pytestmark = pytest.mark.drill  # a fault campaign: make soak runs ten times more examples
EXAMPLES = int(os.environ.get("CHRONIK_FAULT_EXAMPLES", "40")) * SCALE
FAULT_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=SCALE == 1,  # make test: the same cases every run; make soak: new ones
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TABLE = TableSpec("rm_fault", (("id", "TEXT"), ("n", "INTEGER"), ("x", "REAL")), ("id",))
_examples = itertools.count()


class Boom(BaseException):
    """A BaseException that is neither Exception nor a cancellation."""


ERRORS: dict[str, Callable[[], BaseException]] = {
    "overflow": lambda: OverflowError("Python int too large to convert to SQLite INTEGER"),
    "type": lambda: TypeError("unsupported type"),
    "memory": MemoryError,
    "runtime": lambda: RuntimeError("boom"),
    "cancelled": asyncio.CancelledError,
    "base": Boom,
    "sqlite_full": sqlite_error,
    "pg_lost": postgres_connection_lost,
    "chronik": lambda: chronik.StoreUnavailable("injected"),
}


@dataclass
class UnitSpec:
    """One unit of work: appends to ``streams`` streams, optionally a row (maybe a bad value),
    a checkpoint and a snapshot; maybe its caller cancels it."""

    streams: int
    events: int
    row: bool
    bad_value: bool
    checkpoint: bool
    snapshot: bool
    cancel: bool


@dataclass
class FaultSpec:
    """Raise ERRORS[error] at ``step``, in unit ``target`` (None: whichever comes first)."""

    step: str
    error: str
    target: int | None
    skip: int


units_st = st.builds(
    UnitSpec,
    streams=st.integers(1, 2),
    events=st.integers(1, 3),
    row=st.booleans(),
    bad_value=st.just(False),  # set by scenarios() for units with a row
    checkpoint=st.booleans(),
    snapshot=st.booleans(),
    cancel=st.integers(0, 9).map(lambda n: n == 0),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[UnitSpec], list[FaultSpec]]:
    """A few units, a few of them with a bad value, and up to three faults."""
    units = draw(st.lists(units_st, min_size=1, max_size=6))
    for u in units:
        u.bad_value = u.row and draw(st.integers(0, 5)) == 0
    faults = draw(
        st.lists(
            st.builds(
                FaultSpec,
                step=st.sampled_from(WRITE_STEPS),
                error=st.sampled_from(sorted(ERRORS)),
                target=st.none() | st.integers(0, len(units) - 1),
                skip=st.integers(0, 1),
            ),
            max_size=3,
        )
    )
    return units, faults


@dataclass
class Run:
    """One unit's names and what its call ended with."""

    streams: list[StreamId]
    row_id: str | None
    checkpoint: str | None
    snapshot: StreamId | None
    outcome: BaseException | None = None


def _names(tag: str, i: int, spec: UnitSpec) -> Run:
    return Run(
        [StreamId("fault", f"{tag}-{i}-{k}") for k in range(spec.streams)],
        f"{tag}-{i}" if spec.row else None,
        f"cp-{tag}-{i}" if spec.checkpoint else None,
        StreamId("snap", f"{tag}-{i}") if spec.snapshot else None,
    )


async def _write(store: EventStore, spec: UnitSpec, run: Run) -> None:
    async with store.transaction() as tx:
        for stream in run.streams:
            tx.append(stream, [EventData("fault.hit", {"k": k}) for k in range(spec.events)])
        if run.row_id is not None:
            n = 10**30 if spec.bad_value else 1
            row = {"id": run.row_id, "n": n, "x": math.pi}
            tx.write_tables([TableWrite.upsert(TABLE.name, row, ("id",))])
        if run.checkpoint is not None:
            tx.save_checkpoint(run.checkpoint, Position(7))
        if run.snapshot is not None:
            tx.save_snapshot(Snapshot(run.snapshot, 0, "snap", 1, b"{}"))


async def _stored(store: EventStore, run: Run) -> list[bool]:
    """For each part of the unit, whether it is in the store."""
    parts = [await store.stream_version(s) is not None for s in run.streams]
    if run.row_id is not None:
        parts.append(bool(await store.read_table(TABLE.name, {"id": run.row_id})))
    if run.checkpoint is not None:
        parts.append(await store.load_checkpoint(run.checkpoint) is not None)
    if run.snapshot is not None:
        parts.append(await store.load_snapshot(run.snapshot) is not None)
    return parts


async def check_example(store: EventStore, units: list[UnitSpec], faults: list[FaultSpec]) -> None:
    """Run the units concurrently with the faults; check the invariants of the module doc."""
    tag = f"x{next(_examples)}"
    async with store.transaction() as tx:
        tx.write_tables([TableWrite("ensure", TABLE.name, spec=TABLE)])
    runs = [_names(tag, i, spec) for i, spec in enumerate(units)]
    with inject(store) as injector:
        for f in faults:
            where = None if f.target is None else touches(runs[f.target].streams[0])
            injector.fail(f.step, ERRORS[f.error], where=where, skip=f.skip)
        tasks = [asyncio.create_task(_write(store, s, r)) for s, r in zip(units, runs, strict=True)]
        await asyncio.sleep(0)
        for spec, task in zip(units, tasks, strict=True):
            if spec.cancel:
                task.cancel()
        async with asyncio.timeout(20):
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    hit: set[int] = set()
    batch_wide = False
    for _step, unit, _fault in injector.fired:
        if unit is None:
            batch_wide = True
        else:
            hit |= {i for i, r in enumerate(runs) if _in(unit, r)}
    for i, (spec, run, outcome) in enumerate(zip(units, runs, outcomes, strict=True)):
        parts = await _stored(store, run)
        assert all(parts) or not any(parts), (i, parts, outcome)  # never half-written
        if outcome is None:
            assert all(parts), (i, parts)
            continue
        assert isinstance(outcome, BaseException)
        if isinstance(outcome, asyncio.CancelledError):
            assert spec.cancel, (i, outcome)
            continue
        assert isinstance(outcome, chronik.ChronikError), (i, repr(outcome))
        if spec.bad_value:
            assert isinstance(outcome, chronik.ReadModelError), (i, outcome)
        if not (isinstance(outcome, chronik.StoreUnavailable) and outcome.outcome_unknown):
            assert not any(parts), (i, parts, outcome)
        # a unit that no fault touched (and no batch-wide fault could have) commits
        assert spec.bad_value or i in hit or batch_wide or spec.cancel, (i, repr(outcome))
    # the store still works, and says so
    await store.append(StreamId("fault", f"{tag}-after"), [EventData("fault.after", {})])
    assert store.health.ok, store.health


def _in(unit: WriteUnit, run: Run) -> bool:
    return any(r.stream in run.streams for r in unit.appends)


def _run(make: Callable[[], Awaitable[EventStore]], check: Callable[[EventStore], Any]) -> Any:
    async def go(units: list[UnitSpec], faults: list[FaultSpec]) -> None:
        store = await make()
        try:
            await check_example(store, units, faults)
            await check(store)
        finally:
            await store.close()

    return go


@FAULT_SETTINGS
@given(scenario=scenarios())
def test_memory_store_contains_every_fault(
    scenario: tuple[list[UnitSpec], list[FaultSpec]],
) -> None:
    """memory://: faults of any type at any step fail their own unit alone, typed."""

    async def make() -> EventStore:
        return await chronik.open_store("memory://").open()

    async def check(store: EventStore) -> None:
        pass

    asyncio.run(_run(make, check)(*scenario))


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_sqlite_store_contains_every_fault(tmp_path: Path, synchronous: str) -> None:
    """sqlite:// (loop and writer thread): faults fail their unit, or their batch when at
    BEGIN/COMMIT; never half-written, never wedged, integrity_check ok."""
    path = tmp_path / "faults.db"

    async def make() -> EventStore:
        return await chronik.open_store(f"sqlite:///{path}?synchronous={synchronous}").open()

    async def check(store: EventStore) -> None:
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()

    @FAULT_SETTINGS
    @given(scenario=scenarios())
    def examples(scenario: tuple[list[UnitSpec], list[FaultSpec]]) -> None:
        asyncio.run(_run(make, check)(*scenario))

    examples()


def test_postgres_store_contains_every_fault(postgres_url: str) -> None:
    """postgresql://: faults fail their own unit alone; no session is left idle in a
    transaction."""
    import asyncpg

    url = f"{postgres_url}_faults"

    async def make() -> EventStore:
        return await chronik.open_store(url).open()

    async def check(store: EventStore) -> None:
        conn = await asyncpg.connect(url.split("?")[0])
        try:
            idle = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'"
            )
        finally:
            await conn.close()
        assert idle == 0

    @FAULT_SETTINGS
    @given(scenario=scenarios())
    def examples(scenario: tuple[list[UnitSpec], list[FaultSpec]]) -> None:
        asyncio.run(_run(make, check)(*scenario))

    examples()
