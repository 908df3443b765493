"""A Hypothesis state machine of a partitioned projection: workers start, stop and crash while
events arrive and rebuilds, resets, new versions and new partition counts move the partitions
between generations (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

import chronik
from chronik.projections import (
    ErrorPolicy,
    PartitionWorker,
    Projection,
    ProjectionAdmin,
    ReadModel,
    Table,
    query,
)
from chronik.projections.bookkeeping import load_plan
from chronik.testing.services import PostgresService

_fresh = itertools.count(1)
TOTALS = Table("totals", {"id": str, "n": int, "total": int, "last_seq": int}, primary_key="id")


def totals(version: int, partitions: int) -> Projection:
    """Per stream: events, the sum of x times the version, the last sequence (applied once)."""
    p = Projection(
        "totals",
        tables=[TOTALS],
        version=version,
        partitions=partitions,
        batch_size=5,
        policy=ErrorPolicy(retries=0),
    )

    @p.on("added")
    async def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("totals", id=e.stream.aggregate_id)
        if row is not None and row["last_seq"] >= e.sequence:
            raise AssertionError(f"{e.stream}#{e.sequence} applied twice")  # parked: seen below
        n, total = (row["n"], row["total"]) if row else (0, 0)
        x = e.json()["x"] * version
        rm.upsert("totals", id=e.stream.aggregate_id, n=n + 1, total=total + x, last_seq=e.sequence)

    return p


class PlanMachine(RuleBasedStateMachine):
    """The rows always settle to the fold of the events under the newest version."""

    url = "memory://"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.mkdtemp(prefix="chronik-plan-")
        self.store = chronik.open_store(self.store_url())
        self.workers: list[PartitionWorker] = []
        self.history: list[tuple[str, int]] = []
        self.version = 1
        self.partitions = 3
        self.started = 0

    def store_url(self) -> str:
        return self.url.replace("TMP", self.tmp)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _start(self) -> None:
        self.started += 1
        worker = PartitionWorker(
            self.store,
            totals(self.version, self.partitions),
            owner=f"w{self.started}",
            heartbeat=0.02,
            lease_ttl=0.1,
        )
        self.run(worker.start())
        self.workers.append(worker)

    @rule(events=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 50)), max_size=8))
    def append(self, events: list[tuple[int, int]]) -> None:
        async def go() -> None:
            for agg, x in events:
                self.history.append((f"a{agg}", x))
                data = [chronik.EventData("added", {"x": x})]
                await self.store.append(chronik.StreamId("acc", f"a{agg}"), data)

        self.run(go())

    @precondition(lambda self: len(self.workers) < 3)
    @rule()
    def start_worker(self) -> None:
        self._start()

    @precondition(lambda self: bool(self.workers))
    @rule(which=st.integers(0, 2))
    def stop_worker(self, which: int) -> None:
        self.run(self.workers.pop(which % len(self.workers)).stop())

    @precondition(lambda self: bool(self.workers))
    @rule(which=st.integers(0, 2))
    def crash_worker(self, which: int) -> None:
        """Like kill -9: the tasks end where they are, nothing is released."""
        worker = self.workers.pop(which % len(self.workers))
        tasks = [t for t in (worker._task, *(p._task for p in worker.processors)) if t]
        for task in tasks:
            task.cancel()

        async def gone() -> None:
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

        self.run(gone())

    @rule(action=st.sampled_from(["rebuild", "reset"]))
    def request(self, action: str) -> None:
        async def go() -> None:
            with contextlib.suppress(chronik.UnknownProjection):  # no partition ran yet
                await ProjectionAdmin(self.store).request("totals", action)

        self.run(go())

    @rule(partitions=st.integers(2, 4))
    def upgrade(self, partitions: int) -> None:
        """A deploy of a new version (maybe split differently): the old workers go, one new
        one starts, and builds it by itself."""
        self._replace(partitions)
        self.version += 1
        self._start()

    @rule(partitions=st.integers(2, 4))
    def split_anew(self, partitions: int) -> None:
        """The same version with another partition count: the workers wait for a rebuild."""
        self._replace(partitions)
        self._start()
        self.request("rebuild")

    def _replace(self, partitions: int) -> None:
        while self.workers:
            self.run(self.workers.pop().stop())
        self.partitions = partitions

    @rule()
    def rolling_upgrade(self) -> None:
        """A new version starts beside the old workers, which step aside once it serves."""
        self.version += 1
        self._start()

    @rule()
    def settle(self) -> None:
        if not any(w.projection.version == self.version for w in self.workers):
            self._start()
        self.run(self._settled())

    async def _settled(self) -> None:
        store = self.store
        async with asyncio.timeout(30):
            while not await self._quiet():
                await asyncio.sleep(0.02)
        expected: dict[str, dict[str, Any]] = {}
        seqs: dict[str, int] = {}
        for agg, x in self.history:
            seq = seqs[agg] = seqs.get(agg, -1) + 1
            r = expected.setdefault(agg, {"id": agg, "n": 0, "total": 0})
            r["n"] += 1
            r["total"] += x * self.version
            r["last_seq"] = seq
        got = await query(store, "totals", "totals", order_by=("id",))
        assert got == sorted(expected.values(), key=lambda r: r["id"])
        assert await ProjectionAdmin(store).dead_letters("totals") == []
        plan = await load_plan(store, "totals")
        assert plan is not None and (plan.version, plan.partitions) == (
            self.version,
            self.partitions,
        )
        for generation in range(1, plan.newest() + 1):  # the old tables are gone
            exists = True
            try:
                await store.read_table(f"totals__g{generation}", limit=1)
            except chronik.ReadModelError:
                exists = False
            assert exists == (generation == plan.generation)

    async def _quiet(self) -> bool:
        """No request pending, nothing building or retired, only this split's partitions, every
        partition at the head."""
        store = self.store
        plan = await load_plan(store, "totals")
        if plan is None or plan.building is not None or plan.retired:
            return False
        if (plan.version, plan.partitions) != (self.version, self.partitions):
            return False
        if await store.read_table("chronik_projection_requests"):
            return False
        names = [s.name for s in await ProjectionAdmin(store).statuses()]
        if names != [f"totals/{k}" for k in range(self.partitions)]:
            return False  # rows of an earlier split are pruned once no one holds them
        head = await store.head()
        for k in range(self.partitions):
            cp = await store.load_checkpoint(f"projection:totals:g{plan.generation}", k)
            if head is not None and (cp is None or cp.position < head):
                return False
        return True

    def teardown(self) -> None:
        try:
            self.settle()
        finally:
            for worker in self.workers:
                self.run(worker.stop())
            self.run(self.store.close())
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


class SQLitePlanMachine(PlanMachine):
    """The same on SQLite."""

    url = "sqlite:///TMP/events.db"


class PostgresPlanMachine(PlanMachine):
    """The same on PostgreSQL, each example on a fresh schema."""

    server: PostgresService | None = None

    def store_url(self) -> str:
        assert self.server is not None
        return self.server.url("postgres", schema=f"plan{next(_fresh)}")


@pytest.fixture
def _bind_server(postgres_server: PostgresService) -> None:
    PostgresPlanMachine.server = postgres_server


@pytest.mark.usefixtures("_bind_server")
class TestPostgresPlanMachine(PostgresPlanMachine.TestCase):  # type: ignore[name-defined,misc]
    """Workers, rebuilds, resets, versions and splits on PostgreSQL settle to the fold."""

    settings = settings(max_examples=10, stateful_step_count=12, deadline=None)


TestPlanMachine = PlanMachine.TestCase
TestPlanMachine.settings = settings(max_examples=30, stateful_step_count=15, deadline=None)
TestSQLitePlanMachine = SQLitePlanMachine.TestCase
TestSQLitePlanMachine.settings = settings(max_examples=12, stateful_step_count=15, deadline=None)
