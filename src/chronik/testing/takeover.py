"""The partition takeover drill: worker processes share a projection, one leaves, and the time
until every partition it held makes progress again on the survivors is measured.

Run as ``python -m chronik.testing.takeover URL TTL HEARTBEAT PARTITIONS`` this module is one
worker process (a ``PartitionWorker`` of the drill's projection; SIGTERM makes it leave
cleanly, releasing its partitions). ``measure`` starts the workers, keeps events coming to
every partition, waits until they share the partitions and have caught up, then either kills
one with SIGKILL (``kind="kill"``: its leases must expire, so the takeover is bounded by the
lease ttl) or sends it SIGTERM (``kind="leave"``: a graceful handover, bounded by a few
heartbeats), and returns the seconds from the signal until the checkpoint of every partition
the leaver held has moved past where it stood. The test suite and ``python -m bench --only
takeover`` both run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import chronik
from chronik.messages import Position
from chronik.projections import ErrorPolicy, PartitionWorker, Projection, ReadModel, Table
from chronik.projections.bookkeeping import load_plan
from chronik.projections.lanes import checkpoint_name

__all__ = [
    "NAME",
    "Takeover",
    "append_forever",
    "drill_projection",
    "expected_rows",
    "measure",
    "owners",
    "start_worker",
]

NAME = "takeover"
ROWS = Table(
    "takeover_rows", {"id": str, "n": int, "digest": int, "last_seq": int}, primary_key="id"
)
POLL = 0.01  # seconds between two looks at the checkpoints
MOD = 1_000_000_007


def drill_projection(partitions: int) -> Projection:
    """Per stream: the number of ``tick`` events, an order-sensitive digest of their ``i``, the
    last sequence; an event out of stream order or seen twice raises (and is parked)."""
    p = Projection(
        NAME,
        tables=[ROWS],
        partitions=partitions,
        batch_size=50,
        policy=ErrorPolicy(retries=0, then="park"),
    )

    @p.on("tick")
    async def tick(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("takeover_rows", id=e.stream.aggregate_id)
        n, digest, last = (row["n"], row["digest"], row["last_seq"]) if row else (0, 7, -1)
        if e.sequence != last + 1:
            raise ValueError(f"{e.stream}#{e.sequence} after #{last}: out of order or twice")
        digest = (digest * 31 + e.json()["i"]) % MOD
        rm.upsert(
            "takeover_rows", id=e.stream.aggregate_id, n=n + 1, digest=digest, last_seq=last + 1
        )

    return p


async def expected_rows(store: chronik.EventStore) -> list[dict[str, Any]]:
    """What the drill projection's rows must be: the fold of every stored ``tick``."""
    rows: dict[str, dict[str, Any]] = {}
    async for e in store.read_all(types=["tick"]):
        agg = e.stream.aggregate_id
        r = rows.setdefault(agg, {"id": agg, "n": 0, "digest": 7, "last_seq": -1})
        r["n"] += 1
        r["digest"] = (r["digest"] * 31 + e.json()["i"]) % MOD
        r["last_seq"] = e.sequence
    return sorted(rows.values(), key=lambda r: r["id"])


@dataclass(frozen=True, slots=True)
class Takeover:
    """One measured takeover."""

    kind: str  # "kill" (SIGKILL) or "leave" (SIGTERM: a graceful handover)
    seconds: float  # from the signal until every partition of the leaver progressed again
    partitions: tuple[int, ...]  # the partitions the leaver held
    ttl: float
    heartbeat: float


async def _worker(url: str, ttl: float, heartbeat: float, partitions: int) -> None:
    """One worker process: work until SIGTERM (then leave cleanly) or SIGKILL."""
    leave = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, leave.set)
    store = chronik.open_store(url)
    worker = PartitionWorker(
        store, drill_projection(partitions), heartbeat=heartbeat, lease_ttl=ttl
    )
    async with store, worker:
        await leave.wait()


def start_worker(
    url: str, ttl: float, heartbeat: float, partitions: int
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", __name__, url, str(ttl), str(heartbeat), str(partitions)],
        env={**os.environ, "PYTHONPATH": str(Path(chronik.__file__).resolve().parents[1])},
    )


async def owners(store: chronik.EventStore) -> dict[int, int]:
    """The live holder (a pid) of each partition."""
    now = time.time_ns() // 1000
    try:
        rows = await store.read_table("chronik_leases", {"name": NAME})
    except chronik.ReadModelError:
        return {}
    return {
        r["partition"]: int(r["owner"].rsplit(":", 1)[1]) for r in rows if r["expires_at"] > now
    }


async def _checkpoints(store: chronik.EventStore, partitions: int) -> list[Position | None]:
    plan = await load_plan(store, NAME)
    name = checkpoint_name(NAME, plan.generation if plan is not None else 1)
    found = [await store.load_checkpoint(name, k) for k in range(partitions)]
    return [None if c is None else c.position for c in found]


async def append_forever(store: chronik.EventStore, streams: int, every: float) -> None:
    """Events for every stream in turn, so that every partition always has work."""
    i = 0
    while True:
        stream = chronik.StreamId("drill", f"s{i % streams}")
        await store.append(stream, [chronik.EventData("tick", {"i": i})])
        i += 1
        await asyncio.sleep(every)


async def _until(check: Callable[[], Awaitable[bool]], patience: float, what: str) -> None:
    deadline = time.monotonic() + patience
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"takeover drill: {what} not reached in {patience} s")
        await asyncio.sleep(0.05)


async def measure(
    url: str,
    *,
    kind: Literal["kill", "leave"] = "kill",
    workers: int = 3,
    partitions: int = 6,
    ttl: float = 2.0,
    heartbeat: float = 0.2,
    patience: float = 60.0,
) -> Takeover:
    """Start ``workers`` worker processes on ``url``, let one leave as ``kind`` says, and
    measure the takeover (see the module docstring)."""
    procs = [start_worker(url, ttl, heartbeat, partitions) for _ in range(workers)]
    store = chronik.open_store(url)
    try:
        async with store:
            feeder = asyncio.ensure_future(append_forever(store, 4 * partitions, 0.005))
            try:
                return await _measure(store, procs, kind, partitions, ttl, heartbeat, patience)
            finally:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


async def _measure(
    store: chronik.EventStore,
    procs: list[subprocess.Popen[bytes]],
    kind: str,
    partitions: int,
    ttl: float,
    heartbeat: float,
    patience: float,
) -> Takeover:
    pids = {p.pid for p in procs}

    async def shared() -> bool:  # every partition held, by every worker, all caught up
        held_by = await owners(store)
        if len(held_by) < partitions or set(held_by.values()) != pids:
            return False
        head = await store.head()
        return all(
            c is not None and head is not None for c in await _checkpoints(store, partitions)
        )

    await _until(shared, patience, "every worker holding partitions")
    held_by = await owners(store)
    victim = next(p for p in procs if p.pid == held_by[0])  # the leader: the hardest case
    held = tuple(sorted(k for k, pid in held_by.items() if pid == victim.pid))
    # where each partition stood while the leaver (or nobody) held it: a leaver's last commit
    # may still move it; progress is a move past that under a survivor
    base = await _checkpoints(store, partitions)
    victim.send_signal(signal.SIGKILL if kind == "kill" else signal.SIGTERM)
    start = time.monotonic()
    waiting = set(held)
    while waiting:
        if time.monotonic() - start > patience:
            raise TimeoutError(f"takeover drill: partitions {sorted(waiting)} never progressed")
        held_by = await owners(store)
        now = await _checkpoints(store, partitions)
        for k in list(waiting):
            at, was = now[k], base[k]
            if held_by.get(k) in (None, victim.pid):
                base[k] = at
            elif at is not None and (was is None or was < at):
                waiting.discard(k)
        if waiting:
            await asyncio.sleep(POLL)
    seconds = time.monotonic() - start
    victim.wait()
    return Takeover(kind, seconds, held, ttl, heartbeat)


if __name__ == "__main__":
    url_, ttl_, heartbeat_, partitions_ = sys.argv[1:5]
    asyncio.run(_worker(url_, float(ttl_), float(heartbeat_), int(partitions_)))
