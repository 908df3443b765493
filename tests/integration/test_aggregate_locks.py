"""Durable aggregate locks across real OS processes, on a SQLite file and on PostgreSQL.

Run as a script, this module is the command process the tests start:
``python test_aggregate_locks.py URL NAME COUNT LOCKED START SLEEP TTL``: it sends COUNT commands
(ids NAME-0, NAME-1, ...) to the aggregate ``counter/hot`` from wall-clock time START (a
negative START: it prints ``up`` once open and reads the time from stdin), its logic taking
SLEEP seconds, under a ``DurableLock(ttl=TTL)`` when LOCKED is 1; it prints ``decide ID`` each
time the logic runs, ``holding ID`` when a decision starts, ``ready`` before its first command
and ``done ID SECONDS`` after each.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import chronik
from chronik.aggregate_lock_sweep import Claim, claim, delete_claimed, find_expired, sweep_locks
from chronik.aggregate_locks import lock_key

ROOT = Path(__file__).resolve().parents[2]
HOT = chronik.StreamId("counter", "hot")

registry = chronik.EventRegistry()


@registry.event()
class Added(msgspec.Struct):
    by: str


def decide(command: chronik.Command, state: dict[str, Any]) -> Added:
    print("decide", command.command_id, flush=True)
    return Added(command.command_id or "")


def evolve(state: dict[str, Any], event: Added) -> dict[str, Any]:
    return {"n": state.get("n", 0) + 1}


async def child(
    url: str, name: str, count: int, locked: bool, start: float, sleep: float, ttl: float
) -> None:
    """The command process (see the module docstring)."""

    async def slow(command: chronik.Command, state: Any, call_next: Any) -> Any:
        print("holding", command.command_id, flush=True)
        await asyncio.sleep(sleep)
        return await call_next(command, state)

    app = chronik.Chronik(store=url, registry=registry, retry=chronik.RetryPolicy(attempts=200))
    lock = chronik.DurableLock(ttl=ttl, wait=60) if locked else None
    app.add_decider("counter", decide, evolve, dict, lock=lock)
    app.use_handler(slow)
    async with app:
        if start < 0:  # the start time comes once every process is up
            print("up", flush=True)
            start = float(await asyncio.to_thread(sys.stdin.readline))
        await asyncio.sleep(max(0.0, start - time.time()))
        print("ready", flush=True)
        for i in range(count):
            began = time.monotonic()
            command = chronik.Command(
                domain="counter", aggregate_id="hot", type="Add", command_id=f"{name}-{i}"
            )
            result = await app.dispatch(command)
            print("done", result.command_id, round(time.monotonic() - began, 3), flush=True)


def spawn(
    url: str,
    name: str,
    count: int,
    locked: bool,
    start: float = 0.0,
    sleep: float = 0.0,
    ttl: float = 5.0,
) -> subprocess.Popen[str]:
    """Start a command process (this module as a script)."""
    args = [url, name, str(count), "1" if locked else "0", str(start), str(sleep), str(ttl)]
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store URL shared by the processes, migrated before they start."""
    if request.param == "sqlite":
        found = f"sqlite:///{tmp_path}/locks.db"
    else:
        found = request.getfixturevalue("postgres_url")
    async with chronik.open_store(found):
        pass
    yield found


async def _line(proc: subprocess.Popen[str]) -> str:
    """The next line the process prints ("" once it exited)."""
    assert proc.stdout is not None
    return (await asyncio.to_thread(proc.stdout.readline)).strip()


async def _finish(procs: list[subprocess.Popen[str]]) -> list[str]:
    """Every line the processes printed, once they all exited cleanly."""
    lines: list[str] = []
    for proc in procs:
        out, err = await asyncio.to_thread(proc.communicate, timeout=120)
        assert proc.returncode == 0, err
        lines += out.splitlines()
    return lines


async def _contend(url: str, locked: bool) -> tuple[collections.Counter[str], list[str]]:
    """Three processes send six commands each to one aggregate at the same moment; the decide
    calls per command id, and the authors of the stored events."""
    procs = [spawn(url, f"p{k}", 6, locked, -1, 0.02) for k in range(3)]
    for proc in procs:  # every process imported and opened its store
        assert await _line(proc) == "up", await asyncio.to_thread(proc.communicate, timeout=60)
    start = time.time() + 0.2  # then all of them start at the same moment
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()
    lines = await _finish(procs)
    calls = collections.Counter(line.split()[1] for line in lines if line.startswith("decide"))
    async with chronik.open_store(url) as store:
        authors = [e.json()["by"] async for e in store.read_stream(HOT)]
    return calls, authors


async def test_with_the_lock_each_command_is_decided_once_across_processes(url: str) -> None:
    """Three processes race on one aggregate with the lock: the logic runs exactly once per
    command (no conflict, no retry) and every command is applied once."""
    calls, authors = await _contend(url, locked=True)
    expected = {f"p{k}-{i}" for k in range(3) for i in range(6)}
    assert calls == {c: 1 for c in expected}
    assert sorted(authors) == sorted(expected)


async def test_without_the_lock_the_same_workload_retries(url: str) -> None:
    """The control: without the lock the processes conflict, so some commands are decided
    more than once (retries); each is still applied once."""
    calls, authors = await _contend(url, locked=False)
    expected = {f"p{k}-{i}" for k in range(3) for i in range(6)}
    assert set(calls) == expected and sum(calls.values()) > len(expected)
    assert sorted(authors) == sorted(expected)


async def test_a_killed_holder_is_taken_over_after_its_ttl(url: str) -> None:
    """kill -9 of the process holding the lock mid-command: the other process waits while it
    lives, takes the lock over once its lease expired (epoch 2) and runs its command once; the
    killed command appended nothing."""
    ttl = 1.5
    holder = spawn(url, "holder", 1, True, sleep=60, ttl=ttl)
    try:
        line = await _line(holder)
        while line and not line.startswith("holding"):
            line = await _line(holder)
        assert line == "holding holder-0", holder.communicate()[1]
        other = spawn(url, "other", 1, True, ttl=ttl)
        assert await _line(other) == "ready"
        await asyncio.sleep(0.5)
        assert other.poll() is None  # still waiting for the live holder
        holder.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        lines = await _finish([other])
        finished_after_kill = time.monotonic() - killed_at
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
    assert [x for x in lines if x.startswith("decide")] == ["decide other-0"]
    (done,) = [x for x in lines if x.startswith("done")]
    assert float(done.split()[2]) >= 0.5  # it waited for the holder
    assert finished_after_kill < ttl + 5.0
    async with chronik.open_store(url) as store:
        assert [e.json()["by"] async for e in store.read_stream(HOT)] == ["other-0"]
        name, partition = lock_key(HOT)
        (lease,) = [x for x in await store.read_leases(name) if x.partition == partition]
        assert lease.epoch == 2 and not lease.valid()  # taken over, then released


async def test_the_sweep_deletes_ended_rows_but_never_a_lease_taken_meanwhile(url: str) -> None:
    """On the real database: ended lock rows are deleted; a row read as expired and acquired
    by another owner before the claim, or held by another owner under a claim that looks
    fresh (as after a lapse), stays."""
    async with chronik.open_store(url) as store, chronik.open_store(url) as other:
        name, raced = lock_key(HOT)
        _, ended = lock_key(chronik.StreamId("counter", "ended"))
        _, forged = lock_key(chronik.StreamId("counter", "forged"))
        for partition in (raced, ended):
            await store.acquire_lease(name, "old", 0.01, partition)
        await asyncio.sleep(0.1)
        found = await find_expired(store, grace=0)
        assert sorted(found) == sorted([raced, ended])
        await other.acquire_lease(name, "new", 30.0, raced)  # after the read, before the claim
        claimed = await claim(store, found)
        assert claimed.partitions == (ended,)
        assert await delete_claimed(store, claimed) == 1
        await other.acquire_lease(name, "holder", 30.0, forged)
        await delete_claimed(store, Claim("sweep@elsewhere", (forged,), time.monotonic(), 10.0))
        rows = {x.partition: x for x in await store.read_leases(name)}
        assert set(rows) == {raced, forged}
        assert (rows[raced].owner, rows[raced].epoch) == ("new", 2) and rows[raced].valid()
        assert rows[forged].owner == "holder" and rows[forged].valid()
        assert await sweep_locks(store, grace=0) == 0


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(child(a[0], a[1], int(a[2]), a[3] == "1", float(a[4]), float(a[5]), float(a[6])))
