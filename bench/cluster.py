"""cluster: command throughput of 1, 2 and 3 `chronik serve` processes on one PostgreSQL.

Starts its own PostgreSQL 15 (defaults: fsync on, synchronous_commit on). Per run and per
server count a fresh schema and a chronik.testing.local_cluster of that many servers (the shop,
cluster membership on, ``routing: local``, no NATS); ``CUSTOMERS`` customers are created (not
timed), then ``CLIENTS`` concurrent gRPC clients in this process send ``COMMANDS``
AddLoyaltyPoints (CommandGateway.Handle), spread over the nodes round robin.

- ``cluster-throughput-1`` / ``-2`` / ``-3``: commands/s with 1, 2, 3 server processes;
  raw = the same commands from the same number of concurrent tasks through one in-process
  CommandBus (the shop's app in this process) on the same PostgreSQL, no gRPC at all.
- ``cluster-scaling``: commands/s of 3 processes over 1 (value), 1.0 = no gain.

Each throughput line carries ``cpu_cores``: the CPU the servers, PostgreSQL (postmaster and
backends) and the clients (this process) used during the timed part, in cores (2 = both cores
busy), which says what limits it on this machine.

Run alone with ``python -m bench.cluster`` (``--quick``: a fifth of the commands).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

import chronik
from chronik.testing.local_cluster import LocalCluster
from chronik.testing.services import PostgresService, ServiceNotStarted
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 24
CUSTOMERS = 200
COMMANDS = 6000
SERVERS = (1, 2, 3)
DURABILITY = "PostgreSQL 15 defaults: fsync=on, synchronous_commit=on"


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def _commands(n: int, seed: int) -> list[tuple[str, str]]:
    """(customer, command id) of the timed AddLoyaltyPoints, the same for every mode."""
    rng = random.Random(seed)
    return [(f"c{rng.randrange(CUSTOMERS)}", f"cmd-{seed}-{i}") for i in range(n)]


async def _drive_grpc(
    addresses: list[str], work: list[tuple[str, str]], probe: Callable[[], dict[str, float]]
) -> tuple[float, dict[str, float]]:
    """Create the customers through the first node, then time ``work`` from CLIENTS clients,
    client k sending to node k mod len(addresses); (commands/s, CPU cores each part used)."""
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    try:
        stubs = [rpc.CommandGatewayStub(c) for c in channels]
        for i in range(CUSTOMERS):
            body = json.dumps({"name": f"n{i}", "email": "e@x"}).encode()
            request = pb.CommandRequest(
                domain="customer", aggregate_id=f"c{i}", type="CreateCustomer", payload=body
            )
            await stubs[0].Handle(request, timeout=30)

        async def client(k: int) -> None:
            stub = stubs[k % len(stubs)]
            for customer, command_id in work[k::CLIENTS]:
                request = pb.CommandRequest(
                    domain="customer",
                    aggregate_id=customer,
                    type="AddLoyaltyPoints",
                    payload=b'{"points": 5}',
                    command_id=command_id,
                )
                await stub.Handle(request, timeout=60)

        before = probe()
        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(CLIENTS)))
        took = time.perf_counter() - start
        after = probe()
        cores = {k: round((after[k] - before.get(k, 0.0)) / took, 2) for k in after}
        return len(work) / took, cores
    finally:
        for c in channels:
            await c.close()


async def _drive_bus(url: str, work: list[tuple[str, str]]) -> float:
    """The raw baseline: the same commands through one in-process CommandBus; commands/s."""
    sys.path.insert(0, str(ROOT))
    from examples.shop.app import build_app

    async with build_app(url) as app:
        for i in range(CUSTOMERS):
            await app.dispatch(
                chronik.Command(
                    domain="customer",
                    aggregate_id=f"c{i}",
                    type="CreateCustomer",
                    payload={"name": f"n{i}", "email": "e@x"},
                )
            )

        async def client(k: int) -> None:
            for customer, command_id in work[k::CLIENTS]:
                await app.dispatch(
                    chronik.Command(
                        domain="customer",
                        aggregate_id=customer,
                        type="AddLoyaltyPoints",
                        payload={"points": 5},
                        command_id=command_id,
                    )
                )

        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(CLIENTS)))
        return len(work) / (time.perf_counter() - start)


def _cluster_rate(
    url: str, servers: int, work: list[tuple[str, str]], postmaster: int
) -> tuple[float, dict[str, float]]:
    """One run of ``servers`` chronik serve processes on ``url``: commands/s and the CPU
    cores the servers, PostgreSQL and the clients used meanwhile."""
    cluster = LocalCluster(
        servers=servers,
        base={"app": "examples.shop.app:build_app"},
        store=url,
        nats=False,
        app_dir=ROOT,
        grace=2.0,
        env={"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"},
    )
    with cluster:
        cluster.wait_ready(180.0)
        nodes = [n.pid for n in cluster.nodes.values() if n.pid is not None]

        def probe() -> dict[str, float]:
            return {
                "servers": sum(_cpu_seconds(p) for p in nodes),
                "postgres": sum(_cpu_seconds(p) for p in _family(postmaster)),
                "clients": sum(os.times()[:2]),
            }

        addresses = [n.grpc for n in cluster.nodes.values()]
        return asyncio.run(_drive_grpc(addresses, work, probe))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _family(parent: int) -> list[int]:
    """``parent`` and its child processes (PostgreSQL's postmaster and its backends)."""
    found = [parent]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def run(runs: int, quick: bool) -> None:
    """Print the cluster throughput lines (one JSON object per line)."""
    commands = COMMANDS // 5 if quick else COMMANDS
    pg = PostgresService()
    try:
        pg.start()
    except ServiceNotStarted as exc:
        pg.stop()
        log(f"cluster: skipped ({exc})")
        return
    rates: dict[str, list[float]] = {"raw": [], **{str(n): [] for n in SERVERS}}
    cpu: dict[str, dict[str, float]] = {}
    try:
        assert pg.workdir is not None
        postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        for r in range(runs):
            work = _commands(commands, seed=r)
            log(f"cluster run {r + 1}/{runs}: in-process bus ...")
            rates["raw"].append(asyncio.run(_drive_bus(pg.url(schema=f"raw{r}"), work)))
            for n in SERVERS:
                log(f"cluster run {r + 1}/{runs}: {n} servers ...")
                url = pg.url(schema=f"n{n}r{r}")
                rate, cpu[str(n)] = _cluster_rate(url, n, work, postmaster)
                rates[str(n)].append(rate)
    finally:
        pg.stop()
    raw = statistics.median(rates["raw"])
    cores = os.cpu_count() or 1
    for n in SERVERS:
        value = statistics.median(rates[str(n)])
        _line(
            f"cluster-throughput-{n}",
            value,
            raw,
            rates[str(n)],
            rates["raw"],
            note=f"{commands} AddLoyaltyPoints over {CUSTOMERS} customers, {CLIENTS} concurrent "
            f"gRPC clients in one process, round robin over {n} chronik serve processes "
            f"(routing local); raw = the same commands from {CLIENTS} tasks through one "
            f"in-process CommandBus; PostgreSQL, the servers and the clients share {cores} cores",
            cpu_cores=cpu[str(n)],
        )
    one, three = statistics.median(rates["1"]), statistics.median(rates["3"])
    _line(
        "cluster-scaling",
        three / one,
        1.0,
        [b / a for a, b in zip(rates["1"], rates["3"], strict=True)],
        [1.0],
        unit="x",
        note="commands/s of 3 server processes over 1; above 1.0 = more processes helped",
    )


def _line(
    workload: str,
    value: float,
    raw: float,
    runs: list[float],
    raw_runs: list[float],
    *,
    note: str,
    unit: str = "commands/s",
    cpu_cores: dict[str, float] | None = None,
) -> None:
    line: dict[str, Any] = {
        "workload": workload,
        "backend": "postgres",
        "value": round(value, 2),
        "unit": unit,
        "raw": round(raw, 2),
        "ratio": round(value / raw, 3),
        "runs": [round(x, 2) for x in runs],
        "raw_runs": [round(x, 2) for x in raw_runs],
        "durability": DURABILITY,
        "note": note,
    }
    if cpu_cores is not None:  # of the last run: what the 2 cores were busy with
        line["cpu_cores"] = cpu_cores
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a fifth of the commands")
    args = parser.parse_args()
    run(args.runs, args.quick)


if __name__ == "__main__":
    main()
