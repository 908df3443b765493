"""Projections in real processes on one SQLite file: kill -9, rebuild under load, lag, the CLI.

Run as a script, this module is the projector process the tests start:
``python test_projections_processes.py URL serve|catchup [DELAY]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import chronik
from chronik.cli import _build
from chronik.projections import (
    ErrorPolicy,
    PartitionWorker,
    Projection,
    ProjectionAdmin,
    ProjectionProcessor,
    ReadModel,
    Table,
    query,
)
from chronik.projections.bookkeeping import Plan, load_plan

ROOT = Path(__file__).resolve().parents[2]
COUNTS = Table("counts", {"id": str, "n": int, "total": int, "last_seq": int}, primary_key="id")


def counts(delay: float = 0.0, partitions: int = 1) -> Projection:
    """Per stream: number of events, sum of x, last sequence; poison payloads fail."""
    p = Projection(
        "counts",
        tables=[COUNTS],
        batch_size=20,
        policy=ErrorPolicy(retries=0, then="park"),
        partitions=partitions,
    )

    @p.on("added")
    async def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        d = e.json()
        if delay:
            await asyncio.sleep(delay)
        if d.get("poison"):
            raise ValueError("poison")
        row = await rm.get("counts", id=e.stream.aggregate_id)
        if row is not None and row["last_seq"] >= e.sequence:
            raise AssertionError(f"{e.stream}#{e.sequence} applied twice")
        n, total = (row["n"], row["total"]) if row else (0, 0)
        rm.upsert(
            "counts", id=e.stream.aggregate_id, n=n + 1, total=total + d["x"], last_seq=e.sequence
        )

    return p


async def projector(url: str, mode: str, delay: float, ttl: float) -> None:
    store = chronik.open_store(url)
    if mode == "worker":
        worker = PartitionWorker(store, counts(delay, 4), heartbeat=0.1, lease_ttl=ttl)
        async with store, worker:
            await asyncio.Event().wait()  # work until killed
    proc = ProjectionProcessor(store, counts(delay), heartbeat=0.1, lease_ttl=ttl)
    async with store, proc:
        if mode == "catchup":
            head = await store.head()
            if head is not None:
                await proc.wait_for(head)
            return
        await asyncio.Event().wait()  # serve until killed


# --- helpers ----------------------------------------------------------------------------------


def start(
    url: str, mode: str = "serve", delay: float = 0.0, ttl: float = 10.0
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, __file__, url, mode, str(delay), str(ttl)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def append(url: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    async with chronik.open_store(url) as store:
        for agg, d in events:
            await store.append(chronik.StreamId("acc", agg), [chronik.EventData("added", d)])


async def expected(url: str, upto: chronik.Position | None = None) -> list[dict[str, Any]]:
    """The fold of the stored events (up to a position), poison left out."""
    rows: dict[str, dict[str, Any]] = {}
    async with chronik.open_store(url) as store:
        async for e in store.read_all(types=["added"]):
            if upto is not None and e.position > upto:
                break
            d = e.json()
            if d.get("poison"):
                continue
            r = rows.setdefault(e.stream.aggregate_id, {"id": e.stream.aggregate_id, "n": 0})
            r["n"] += 1
            r["total"] = r.get("total", 0) + d["x"]
            r["last_seq"] = e.sequence
    return sorted(rows.values(), key=lambda r: r["id"])


async def actual(url: str) -> list[dict[str, Any]]:
    async with chronik.open_store(url) as store:
        try:
            return await query(store, "counts", "counts", order_by=("id",))
        except chronik.ReadModelError:
            return []


async def status(url: str) -> chronik.projections.ProjectionStatus | None:
    async with chronik.open_store(url) as store:
        found = [s for s in await ProjectionAdmin(store).statuses() if s.name == "counts"]
        return found[0] if found else None


def wait_until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def caught_up(url: str) -> bool:
    s = run(status(url))
    return s is not None and s.alive and s.lag_events == 0 and s.building is None


async def owners(url: str) -> dict[int, str]:
    """The live owner of each partition of ``counts``."""
    async with chronik.open_store(url) as store:
        now = time.time_ns() // 1000
        try:
            rows = await store.read_table("chronik_leases", {"name": "counts"})
        except chronik.ReadModelError:  # no worker has created it yet
            return {}
        return {r["partition"]: r["owner"] for r in rows if r["expires_at"] > now}


def pids(owned: dict[int, str]) -> set[int]:
    return {int(o.rsplit(":", 1)[1]) for o in owned.values()}


async def caught_up_all(url: str, generation: int = 1) -> bool:
    """Whether every partition's checkpoint of ``generation`` is at the head."""
    async with chronik.open_store(url) as store:
        head = await store.head()
        for k in range(4):
            cp = await store.load_checkpoint(f"projection:counts:g{generation}", k)
            if cp is None or head is None or cp.position < head:
                return False
        return True


async def plan(url: str) -> Plan | None:
    async with chronik.open_store(url) as store:
        return await load_plan(store, "counts")


def writer(url: str, n: int) -> subprocess.Popen[bytes]:
    """Another process appending ``n`` events, one every millisecond or so."""
    code = (
        "import asyncio, sys, chronik\n"
        "async def main():\n"
        f"    async with chronik.open_store({url!r}) as s:\n"
        f"        for i in range({n}):\n"
        "            await s.append(chronik.StreamId('acc', f'w{i % 5}'),"
        " [chronik.EventData('added', {'x': i})])\n"
        "            await asyncio.sleep(0.001)\n"
        "asyncio.run(main())\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT / "src")}
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/p.db"


@pytest.fixture
def server(url: str) -> Iterator[subprocess.Popen[str]]:
    """A projector process serving ``counts`` until the test ends."""
    run(append(url, [("a", {"x": 1})]))
    proc = start(url)
    wait_until(lambda: caught_up(url))
    yield proc
    proc.kill()
    proc.wait()


# --- the hard cases ---------------------------------------------------------------------------


def test_kill_9_mid_batch_then_restart_applies_everything_exactly_once(url: str) -> None:
    """A projector killed mid-batch leaves rows equal to the fold up to its checkpoint; after
    a restart they equal the fold of all events, none applied twice."""
    run(append(url, [(f"s{i % 6}", {"x": i}) for i in range(600)]))
    proc = start(url, "serve", delay=0.002, ttl=1.0)

    async def checkpoint() -> chronik.Position | None:
        async with chronik.open_store(url) as store:
            cp = await store.load_checkpoint("projection:counts:g1")
            return None if cp is None else cp.position

    wait_until(lambda: (run(checkpoint()) or chronik.Position(0)) >= chronik.Position(100))
    time.sleep(0.015)  # inside the next batch
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    at_kill = run(checkpoint())
    assert at_kill is not None and at_kill < chronik.Position(600)
    assert run(actual(url)) == run(expected(url, at_kill))  # nothing of the torn batch
    run(append(url, [(f"s{i % 4}", {"x": 1000 + i}) for i in range(50)]))
    restarted = start(url, "catchup", ttl=1.0)  # takes over once the dead one's lease expires
    _, err = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, err
    assert run(actual(url)) == run(expected(url))
    assert sum(r["n"] for r in run(actual(url))) == 650


def test_a_standby_process_takes_over_when_the_owner_is_killed(url: str) -> None:
    """Two projector processes: one owns the lease, the other stands by; kill -9 the owner
    mid-batch and the standby takes over by lease expiry, ending equal to the fold."""
    run(append(url, [(f"s{i % 5}", {"x": i}) for i in range(500)]))
    owner = start(url, "serve", delay=0.002, ttl=1.0)
    wait_until(lambda: (s := run(status(url))) is not None and s.owner is not None)
    standby = start(url, "serve", ttl=1.0)
    try:
        first = run(status(url))
        assert first is not None and first.owner is not None
        assert first.owner.endswith(f":{owner.pid}")
        wait_until(lambda: chronik.Position.parse(run(status(url)).position or "0").commit > 100)
        time.sleep(0.015)
        owner.send_signal(signal.SIGKILL)
        assert owner.wait() == -signal.SIGKILL
        wait_until(lambda: caught_up(url) and run(status(url)).owner.endswith(f":{standby.pid}"))
        assert run(actual(url)) == run(expected(url))
        assert sum(r["n"] for r in run(actual(url))) == 500
    finally:
        for p in (owner, standby):
            p.kill()
            p.wait()


def test_partition_workers_rebalance_when_killed_and_added(url: str) -> None:
    """Three worker processes share 4 partitions; one is killed -9 and another joins while
    events keep coming; in the end every partition is held by a live worker and the rows
    equal the fold, nothing applied twice."""
    run(append(url, [(f"s{i % 20}", {"x": i}) for i in range(600)]))
    workers = [start(url, "worker", delay=0.001, ttl=1.0) for _ in range(3)]

    try:
        wait_until(lambda: len(run(owners(url))) == 4 and len(pids(run(owners(url)))) == 3)
        victim = next(w for w in workers if w.pid in pids(run(owners(url))))
        victim.send_signal(signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL
        workers.append(start(url, "worker", ttl=1.0))
        run(append(url, [(f"s{i % 20}", {"x": 1000 + i}) for i in range(200)]))
        live = {w.pid for w in workers if w is not victim}
        wait_until(lambda: len(run(owners(url))) == 4 and pids(run(owners(url))) <= live)
        wait_until(lambda: run(caught_up_all(url)))
        assert run(actual(url)) == run(expected(url))
        assert sum(r["n"] for r in run(actual(url))) == 800

        async def letters() -> list[Any]:
            async with chronik.open_store(url) as store:
                return await ProjectionAdmin(store).dead_letters()

        assert run(letters()) == []
    finally:
        for w in workers:
            w.kill()
            w.wait()


def test_rebuild_from_the_cli_while_appends_continue_ends_equal_to_a_fresh_fold(
    url: str, server: subprocess.Popen[str]
) -> None:
    """chronik projections rebuild, with another process appending throughout, converges."""
    run(append(url, [(f"s{i % 9}", {"x": i}) for i in range(2000)]))
    wait_until(lambda: caught_up(url))
    appender = writer(url, 400)
    result = CliRunner().invoke(_build(), ["projections", "rebuild", "counts", "--store", url])
    assert result.exit_code == 0, result.output
    assert "rebuilt counts: generation 2" in result.stdout
    assert appender.wait(timeout=60) == 0
    wait_until(lambda: caught_up(url))
    assert run(actual(url)) == run(expected(url))
    s = run(status(url))
    assert s is not None and s.generation == 2 and s.state == "running"


def test_partitioned_rebuild_from_the_cli_survives_kill_9_of_the_leader(url: str) -> None:
    """Three worker processes rebuild a 4-partition projection (CLI) while another process
    appends; the owner of partition 0, which leads the switch, is killed -9 mid-build; another
    worker takes partition 0 over, the build completes, and the rows equal a fresh fold."""
    run(append(url, [(f"s{i % 20}", {"x": i}) for i in range(1500)]))
    workers = [start(url, "worker", delay=0.001, ttl=1.0) for _ in range(3)]
    try:
        wait_until(lambda: len(run(owners(url))) == 4 and run(caught_up_all(url)))
        appender = writer(url, 400)
        args = ["projections", "rebuild", "counts", "--store", url]
        with ThreadPoolExecutor(1) as pool:
            rebuild = pool.submit(CliRunner().invoke, _build(), args)
            wait_until(lambda: (p := run(plan(url))) is not None and p.building == 2)
            leader = int(run(owners(url))[0].rsplit(":", 1)[1])
            victim = next(w for w in workers if w.pid == leader)
            victim.send_signal(signal.SIGKILL)
            assert victim.wait() == -signal.SIGKILL
            assert run(plan(url)).building == 2  # nobody leads until partition 0 moves
            result = rebuild.result(timeout=120)
        assert result.exit_code == 0, result.output
        assert "rebuilt counts: generation 2" in result.stdout
        assert appender.wait(timeout=60) == 0
        wait_until(lambda: run(caught_up_all(url, 2)))
        wait_until(lambda: run(plan(url)) == Plan(2, 1, 4))  # generation 1 dropped once all follow
        assert run(actual(url)) == run(expected(url))
        assert sum(r["n"] for r in run(actual(url))) == 1900
        assert pids(run(owners(url))) <= {w.pid for w in workers if w is not victim}
    finally:
        for w in workers:
            w.kill()
            w.wait()


def test_live_projection_keeps_up_under_load(url: str, server: subprocess.Popen[str]) -> None:
    """While another process appends 3,000 events the projector advances live; then lag is 0."""
    seen: list[chronik.projections.ProjectionStatus] = []

    async def load() -> None:
        async with chronik.open_store(url) as store:
            admin = ProjectionAdmin(store)
            for i in range(3000):
                await store.append(
                    chronik.StreamId("acc", f"l{i % 50}"), [chronik.EventData("added", {"x": i})]
                )
                if i % 500 == 499:
                    seen.append(await admin.status("counts"))

    run(load())
    positions = [chronik.Position.parse(s.position) for s in seen if s.position]
    assert positions and positions[-2] > positions[0]  # it moved while the load ran
    assert all(s.alive for s in seen)
    wait_until(lambda: caught_up(url))
    assert run(actual(url)) == run(expected(url))


# --- the CLI against a running projector ------------------------------------------------------


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_build(), ["projections", *args])
    return result.exit_code, result.stdout, result.stderr


def jsonl(text: str) -> list[Any]:
    """The objects of a --json output (JSON Lines)."""
    return [json.loads(line) for line in text.splitlines()]


def test_cli_status_pause_resume_reset(url: str, server: subprocess.Popen[str]) -> None:
    """status --json shows the running projector; pause, resume and reset reach it."""
    code, out, _ = cli("status", "--json", "--store", url)
    [s] = jsonl(out)
    assert code == 0 and s["name"] == "counts" and s["state"] == "running" and s["alive"]
    assert {"position", "head", "lag_events", "lag_seconds", "last_error"} <= s.keys()
    code, out, _ = cli("pause", "counts", "--store", url)
    assert code == 0 and "done: counts paused" in out
    run(append(url, [("a", {"x": 5})]))
    time.sleep(0.3)
    [s] = jsonl(cli("status", "--json", "--store", url)[1])
    assert s["state"] == "paused" and s["lag_events"] == 1
    code, out, _ = cli("resume", "counts", "--store", url)
    assert code == 0 and "done: counts running" in out
    wait_until(lambda: caught_up(url))
    code, out, _ = cli("reset", "counts", "--store", url)
    assert code == 0 and "reset of counts" in out
    wait_until(lambda: caught_up(url))
    assert run(actual(url)) == run(expected(url))
    code, out, _ = cli("status", "--store", url)
    assert code == 0 and "counts" in out and "running" in out


def test_cli_dead_letters_list_retry_drop(url: str, server: subprocess.Popen[str]) -> None:
    """A parked poison event shows in dead-letters list; retry keeps it; drop unparks the stream."""
    run(append(url, [("p", {"x": 1, "poison": True}), ("p", {"x": 2}), ("q", {"x": 3})]))
    wait_until(lambda: caught_up(url))
    code, out, _ = cli("dead-letters", "list", "--json", "--store", url)
    letters = jsonl(out)
    assert code == 0 and [(d["stream"], d["blocked"]) for d in letters] == [
        ("acc/p", False),
        ("acc/p", True),
    ]
    assert "poison" in letters[0]["error"]
    code, out, _ = cli("dead-letters", "retry", "counts", "--store", url)
    assert code == 0 and "retry of counts done" in out
    assert len(jsonl(cli("dead-letters", "list", "--json", "--store", url)[1])) == 2
    code, _, err = cli("dead-letters", "drop", "counts", "--store", url)
    assert code == 1 and "--event" in err
    code, out, _ = cli("dead-letters", "drop", "counts", "--stream", "acc/p", "--store", url)
    assert code == 0 and "dropped 2" in out
    assert jsonl(cli("dead-letters", "list", "--json", "--store", url)[1]) == []
    run(append(url, [("p", {"x": 7})]))
    wait_until(lambda: caught_up(url))
    assert {r["id"]: r["total"] for r in run(actual(url))}["p"] == 7


def test_cli_errors_name_the_known_projections(url: str, server: subprocess.Popen[str]) -> None:
    """An unknown name or a bad position exits 1 with one line; the line lists known names."""
    for args in (("pause", "nope"), ("rebuild", "nope"), ("dead-letters", "list", "nope")):
        code, out, err = cli(*args, "--store", url)
        assert code == 1 and "unknown projection 'nope'" in err and "counts" in err
        assert "Traceback" not in out + err
    code, _, err = cli("reset", "counts", "--to", "x1", "--store", url)
    assert code == 1 and "invalid position" in err


def test_cli_status_of_a_dead_projector_says_stopped(url: str) -> None:
    """Once the projector process is gone its heartbeat ages and status shows it stopped."""
    run(append(url, [("a", {"x": 1})]))
    proc = start(url, "catchup")
    assert proc.wait(timeout=60) == 0
    run(append(url, [("a", {"x": 2})]))
    code, out, _ = cli("status", "--json", "--store", url)
    [s] = jsonl(out)
    assert s["state"] == "stopped" and s["lag_events"] == 1
    code, out, _ = cli("pause", "counts", "--store", url)
    assert code == 0 and "queued" in out  # applied when a projector starts
    proc = start(url, "serve")
    try:
        wait_until(lambda: (s := run(status(url))) is not None and s.alive and s.state == "paused")
        [s] = jsonl(cli("status", "--json", "--store", url)[1])
        assert s["lag_events"] == 1  # it started paused
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    asyncio.run(projector(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
