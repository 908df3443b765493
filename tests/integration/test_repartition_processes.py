"""Repartition with real worker processes on real PostgreSQL, from the CLI, through a kill -9.

Three ``PartitionWorker`` processes (chronik.testing.takeover's drill projection: per stream an
order-sensitive digest; an event out of order or seen twice is parked) share six partitions
while another task appends. ``chronik projections repartition`` asks for four; while it is in
progress the leader (the owner of partition 0) is killed -9; a survivor takes partition 0 over
and completes it. The rows then equal the fold of every event, nothing is parked, and a rebuild
of the same events produces the same rows.
"""

from __future__ import annotations

import asyncio
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from typer.testing import CliRunner

import chronik
from chronik.cli import _build
from chronik.projections import ProjectionAdmin, query
from chronik.projections.bookkeeping import load_plan
from chronik.projections.lanes import checkpoint_name
from chronik.projections.repartition import load_pending
from chronik.store.tables import LEASES, PLANS, REQUESTS, STATUS
from chronik.testing.takeover import NAME, append_forever, expected_rows, owners, start_worker

TTL = 1.5
HEARTBEAT = 0.1


async def _caught_up(url: str, partitions: int) -> bool:
    """Whether the plan serves ``partitions`` and each is held and at the head."""
    async with chronik.open_store(url) as store:
        plan = await load_plan(store, NAME)
        if plan is None or plan.partitions != partitions or plan.building is not None:
            return False
        if sorted(await owners(store)) != list(range(partitions)):
            return False
        head = await store.head()
        for k in range(partitions):
            cp = await store.load_checkpoint(checkpoint_name(NAME, plan.generation), k)
            if cp is None or head is None or cp.position < head:
                return False
        return True


def _until(check: Any, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not asyncio.run(check()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


async def _pending(url: str) -> bool:
    async with chronik.open_store(url) as store:
        return await load_pending(store, NAME) is not None


async def _leader_once_pending(url: str) -> int:
    """The pid that holds partition 0 (the leader) once a repartition is in progress (on a
    timeout, the failure shows the plan and the requests, status, lease and plan tables)."""
    async with chronik.open_store(url) as store:
        try:
            async with asyncio.timeout(20):
                while True:
                    if await load_pending(store, NAME) is not None:
                        leader = (await owners(store)).get(0)
                        if leader is not None:
                            return leader
                    await asyncio.sleep(0.01)
        except TimeoutError:
            shown = (REQUESTS, STATUS, LEASES, PLANS)
            tables = {t.name: await store.read_table(t.name) for t in shown}
            plan = await load_plan(store, NAME)
            raise AssertionError(
                f"no repartition in progress in 20 s: plan {plan}, {tables}"
            ) from None


async def _rows(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """The rows, the fold of the stored events, the number of dead letters."""
    async with chronik.open_store(url) as store:
        rows = await query(store, NAME, "takeover_rows", order_by=("id",))
        letters = await ProjectionAdmin(store).dead_letters(NAME)
        return rows, await expected_rows(store), len(letters)


async def _append_for(url: str, seconds: float) -> None:
    async with chronik.open_store(url) as store:
        with_timeout = asyncio.ensure_future(append_forever(store, 40, 0.003))
        await asyncio.sleep(seconds)
        with_timeout.cancel()
        await asyncio.gather(with_timeout, return_exceptions=True)


async def _seed(url: str) -> None:
    async with chronik.open_store(url) as store:
        for i in range(400):
            stream = chronik.StreamId("drill", f"s{i % 40}")
            await store.append(stream, [chronik.EventData("tick", {"i": i})])


def test_repartition_from_the_cli_survives_kill_9_of_the_leader(postgres_url: str) -> None:
    """6 -> 4 partitions from the CLI while appends go on; the leader is killed -9 mid-way; the
    repartition completes, the rows equal the fold and a rebuild's, nothing is parked."""
    url = postgres_url
    asyncio.run(_seed(url))
    workers = [start_worker(url, TTL, HEARTBEAT, 6) for _ in range(3)]
    try:
        _until(lambda: _caught_up(url, 6))
        runner = CliRunner()
        args = ["projections", "repartition", NAME, "--partitions", "4", "--store", url]
        with ThreadPoolExecutor(2) as pool:
            appends = pool.submit(asyncio.run, _append_for(url, 4.0))
            time.sleep(0.3)
            result = pool.submit(runner.invoke, _build(), args)
            leader = asyncio.run(_leader_once_pending(url))
            victim = next(w for w in workers if w.pid == leader)
            victim.send_signal(signal.SIGKILL)
            assert victim.wait() == -signal.SIGKILL
            assert asyncio.run(_pending(url))  # killed mid-way: a survivor must complete it
            done = result.result(timeout=120)
            appends.result(timeout=60)
        assert done.exit_code == 0, done.output
        assert f"repartitioned {NAME}: 4 partitions from position" in done.stdout
        _until(lambda: _caught_up(url, 4))
        rows, fold, parked = asyncio.run(_rows(url))
        assert parked == 0
        assert rows == fold and sum(r["n"] for r in rows) > 400
        rebuilt = runner.invoke(_build(), ["projections", "rebuild", NAME, "--store", url])
        assert rebuilt.exit_code == 0, rebuilt.output
        assert "generation 2" in rebuilt.stdout
        _until(lambda: _caught_up(url, 4))
        assert asyncio.run(_rows(url)) == (rows, fold, 0)
    finally:
        for w in workers:
            w.kill()
            w.wait()
