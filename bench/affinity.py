"""affinity: command routing by aggregate affinity on three `chronik serve` nodes, PostgreSQL.

Starts its own PostgreSQL 15, then per mode (``cluster.routing: local``, then ``affinity``)
and run a fresh schema and three `chronik serve` processes with membership (bench.affinity_app:
an ``account`` decider that counts its decisions). ``CLIENTS`` concurrent clients send
``Deposit`` commands for a shared set of ``AGGREGATES`` aggregates, each to a random node.

- ``affinity-conflicts``: append conflicts (a decision taken again after losing the append
  race: WrongExpectedVersion inside the CommandBus, counted by the nodes) per 10,000 commands;
  value = routed by affinity, raw = local (each node handles what it receives);
- ``affinity-forward-latency``: one client, sequential commands, each aggregate's command sent
  directly to its owner and then to a non-owner (forwarded, one hop); p50 / p99 in ms of
  both, and the added latency (forwarded minus direct) at p50 and p99;
- ``affinity-throughput``: commands/s of the concurrent drive, routed (value) and local (raw).

Run alone with ``python -m bench.affinity`` (``--quick``: a fifth of the commands).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from chronik.cluster.ring import HashRing, key_of
from chronik.testing.services import PostgresService, ServiceNotStarted, free_port
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

ROOT = Path(__file__).resolve().parents[1]
NODES = ("node-1", "node-2", "node-3")
AGGREGATES = 30
CLIENTS = 24
COMMANDS = 3000
LATENCY_SAMPLES = 400
TTL = 2.0


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def start_node(
    tmp: Path, url: str, name: str, routing: str, counts: Path
) -> tuple[subprocess.Popen[str], str]:
    """One `chronik serve` node; returns the process and its gRPC address once it joined."""
    config = tmp / f"{name}.yaml"
    config.write_text(
        f"store: {url}\n"
        "app: bench.affinity_app:build_app\n"
        f"grpc: {{host: 127.0.0.1, port: {free_port()}}}\n"
        "http: {enabled: false}\n"
        f"cluster: {{enabled: true, node_id: {name}, ttl: {TTL}, routing: {routing}}}\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "CHRONIK_STORE": "",
        "CHRONIK_BENCH_COUNTS": str(counts),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "chronik.cli", "serve", "--config", str(config)],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        found = re.search(r"advertising gRPC (\S+),", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise RuntimeError(f"node {name} did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def request(aggregate: str, command_id: str) -> pb.CommandRequest:
    return pb.CommandRequest(
        domain="account",
        aggregate_id=aggregate,
        type="Deposit",
        payload=b'{"amount": 1}',
        command_id=command_id,
    )


async def settle(stubs: list[Any]) -> None:
    """Wait until every node routes by the full ring: a command per aggregate through each
    node answers (not timed), once every node's membership lists all three (2 heartbeats)."""
    await asyncio.sleep(TTL)
    for i, stub in enumerate(stubs):
        await stub.Handle(request("warm", f"warm-{i}"), timeout=30)


async def drive(addresses: list[str], commands: int) -> float:
    """``commands`` from CLIENTS concurrent clients, random aggregate, random node: commands/s."""
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    stubs = [rpc.CommandGatewayStub(c) for c in channels]  # type: ignore[no-untyped-call]
    await settle(stubs)
    per_client = commands // CLIENTS

    async def client(k: int) -> None:
        for i in range(per_client):
            aggregate = f"acc-{random.randrange(AGGREGATES)}"
            await random.choice(stubs).Handle(request(aggregate, f"c{k}-{i}"), timeout=60)

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(CLIENTS)))
    rate = per_client * CLIENTS / (time.perf_counter() - started)
    for channel in channels:
        await channel.close()
    return rate


async def latency(addresses: dict[str, str], samples: int) -> tuple[list[float], list[float]]:
    """Milliseconds of commands sent to the aggregate's owner (direct) and to another node
    (forwarded), alternated, one at a time."""
    channels = {n: grpc.aio.insecure_channel(a) for n, a in addresses.items()}
    stubs = {n: rpc.CommandGatewayStub(c) for n, c in channels.items()}  # type: ignore[no-untyped-call]
    ring = HashRing(NODES)
    direct: list[float] = []
    forwarded: list[float] = []
    for i in range(-20, samples):  # the first 20: warm-up, not kept
        aggregate = f"lat-{i % AGGREGATES}"
        owner = ring.owner(key_of("", "account", aggregate))
        other = random.choice([n for n in NODES if n != owner])
        for node, into in ((owner, direct), (other, forwarded)):
            assert node is not None
            began = time.perf_counter()
            await stubs[node].Handle(request(aggregate, f"lat-{node}-{i}"), timeout=30)
            if i >= 0:
                into.append((time.perf_counter() - began) * 1000)
    for channel in channels.values():
        await channel.close()
    return direct, forwarded


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one_run(
    service: PostgresService, mode: str, run: int, commands: int, samples: int
) -> dict[str, Any]:
    """Three nodes in ``mode``: the drive's rate and conflicts (and latencies with affinity)."""
    tmp = Path(tempfile.mkdtemp(prefix="chronik-affinity-"))
    counts = tmp / "counts"
    counts.mkdir()
    url = service.url("postgres", schema=f"affinity_{mode}_{run}")
    procs: list[subprocess.Popen[str]] = []
    try:
        addresses = {}
        for name in NODES:
            proc, address = start_node(tmp, url, name, mode, counts)
            procs.append(proc)
            addresses[name] = address
        rate = asyncio.run(drive(list(addresses.values()), commands))
        out: dict[str, Any] = {"rate": rate}
        if samples:
            out["direct"], out["forwarded"] = asyncio.run(latency(addresses, samples))
    finally:
        for proc in procs:
            stop(proc)
    decisions = sum(json.loads(f.read_text())["decisions"] for f in counts.glob("*.json"))
    handled = (commands // CLIENTS) * CLIENTS + len(NODES) + (2 * (samples + 20) if samples else 0)
    out["conflicts_per_10k"] = (decisions - handled) * 10_000 / handled
    out["files"] = len(list(counts.glob("*.json")))
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def run(runs: int = 1, quick: bool = False) -> None:
    """Start PostgreSQL, run both modes ``runs`` times, print the JSON lines."""
    commands = COMMANDS // (5 if quick else 1)
    samples = LATENCY_SAMPLES // (4 if quick else 1)
    service = PostgresService(durable=True)
    try:
        service.start()
    except ServiceNotStarted as exc:
        log(f"affinity: skipped ({exc})")
        service.stop()
        return
    results: dict[str, list[dict[str, Any]]] = {"local": [], "affinity": []}
    try:
        for run_no in range(runs):
            for mode in ("local", "affinity"):
                log(f"affinity: {mode} run {run_no + 1} ...")
                take = samples if mode == "affinity" else 0
                results[mode].append(one_run(service, mode, run_no, commands, take))
    finally:
        service.stop()
    if any(r["files"] != len(NODES) for rs in results.values() for r in rs):
        log("affinity: a node did not report its counts (it did not exit cleanly)")
    routed = [r["conflicts_per_10k"] for r in results["affinity"]]
    local = [r["conflicts_per_10k"] for r in results["local"]]
    base = {"backend": "postgres", "nodes": len(NODES), "aggregates": AGGREGATES}
    lines: list[dict[str, Any]] = [
        {
            "workload": "affinity-conflicts",
            **base,
            "value": round(statistics.median(routed), 1),
            "raw": round(statistics.median(local), 1),
            "unit": "conflicts/10k commands",
            "runs": [round(v, 1) for v in routed],
            "raw_runs": [round(v, 1) for v in local],
            "note": f"{commands} Deposit commands from {CLIENTS} concurrent clients, each to a "
            f"random node, over {AGGREGATES} shared aggregates; value = cluster.routing: "
            "affinity, raw = local; a conflict = a decision retried after losing the append race",
        },
        {
            "workload": "affinity-throughput",
            **base,
            "value": round(statistics.median(r["rate"] for r in results["affinity"]), 1),
            "raw": round(statistics.median(r["rate"] for r in results["local"]), 1),
            "unit": "commands/s",
            "note": "the same drive: routed (value) vs local (raw), 2 shared cores",
        },
    ]
    direct = [v for r in results["affinity"] for v in r["direct"]]
    forwarded = [v for r in results["affinity"] for v in r["forwarded"]]
    lines.append(
        {
            "workload": "affinity-forward-latency",
            **base,
            "unit": "ms",
            "p50": round(p(forwarded, 0.5), 3),
            "p99": round(p(forwarded, 0.99), 3),
            "direct_p50": round(p(direct, 0.5), 3),
            "direct_p99": round(p(direct, 0.99), 3),
            "added_p50": round(p(forwarded, 0.5) - p(direct, 0.5), 3),
            "added_p99": round(p(forwarded, 0.99) - p(direct, 0.99), 3),
            "samples": len(forwarded),
            "note": "one client, one command at a time: to the aggregate's owner (direct) and "
            "to another node (forwarded over gRPC, one hop), alternated",
        }
    )
    for line in lines:
        print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.affinity")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    run(args.runs, args.quick)


if __name__ == "__main__":
    main()
