"""W10: commands through CommandGateway.Handle, 8 concurrent clients, SQLite store.

Three servers, each its own process: chronik with the shop in-process, chronik with the
customer domain in a Python BusinessLogic service, and the raw baseline (a bare gRPC servicer
doing a plain sqlite3 append). Each run first creates the customers (not timed), then sends
AddLoyaltyPoints commands. Also the chronik server's resident memory when idle.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import msgspec

from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 8


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def start(args: list[str], pattern: str, cwd: str) -> tuple[subprocess.Popen[str], int]:
    """Start a process and wait for the line that names its port."""
    # this checkout's chronik, whichever one the virtualenv has installed
    path = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
    env = {**os.environ, "PYTHONPATH": path, "CHRONIK_STORE": ""}
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(pattern, line)
        if match:
            return proc, int(match.group(1))
    proc.kill()
    raise RuntimeError(f"{args} did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)  # drains stdout: a full pipe would block the exit
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def drive(port: int, customers: int, commands: int) -> tuple[float, float, float]:
    """Create the customers, then time ``commands`` AddLoyaltyPoints from 8 clients."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rpc.CommandGatewayStub(channel)
        for i in range(customers):
            await stub.Handle(
                pb.CommandRequest(
                    domain="customer",
                    aggregate_id=f"c{i}",
                    type="CreateCustomer",
                    payload=msgspec.json.encode({"name": f"n{i}", "email": "e@x"}),
                )
            )
        latencies: list[float] = []

        async def client(k: int) -> None:
            for i in range(k, commands, CLIENTS):
                request = pb.CommandRequest(
                    domain="customer",
                    aggregate_id=f"c{i % customers}",
                    type="AddLoyaltyPoints",
                    payload=b'{"points": 5}',
                    command_id=f"cmd-{i}",
                )
                t0 = time.perf_counter()
                await stub.Handle(request, timeout=30)
                latencies.append((time.perf_counter() - t0) * 1000)

        start_t = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(CLIENTS)))
        rate = commands / (time.perf_counter() - start_t)
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return rate, p50, p99


def one_run(mode: str, customers: int, commands: int) -> tuple[float, float, float, float]:
    """One server of ``mode`` in a fresh directory: (rate, p50, p99, idle RSS MB)."""
    d = tempfile.mkdtemp(prefix="chronik-w10-")
    procs: list[subprocess.Popen[str]] = []
    try:
        db = os.path.join(d, "events.db")
        if mode == "raw":
            proc, port = start(["-m", "bench.raw_grpc_server", db], r"raw gRPC on .*:(\d+)", d)
            procs.append(proc)
        else:
            config = os.path.join(d, "chronik.yaml")
            lines = ["app: examples.shop.app:build_app", "http: {enabled: false}"]
            if mode == "remote":
                svc, svc_port = start(
                    ["-m", "examples.shop.services.customer_service", "--port", "0"],
                    r"customer business logic on .*:(\d+)",
                    d,
                )
                procs.append(svc)
                lines = [
                    "http: {enabled: false}",
                    "registry: examples.shop.events:registry",
                    "domains: ['examples.shop.transaction:Transaction']",
                    f"business_logic: [{{domain: customer, address: '127.0.0.1:{svc_port}'}}]",
                ]
            Path(config).write_text("\n".join(lines) + "\n")
            proc, port = start(
                [
                    "-m",
                    "chronik.cli",
                    "serve",
                    "--config",
                    config,
                    "--store",
                    f"sqlite:///{db}",
                    "--port",
                    "0",
                ],
                r"gRPC:\s+127\.0\.0\.1:(\d+)",
                d,
            )
            procs.append(proc)
        time.sleep(1.0)
        idle = rss_mb(procs[-1].pid)
        rate, p50, p99 = asyncio.run(drive(port, customers, commands))
        return rate, p50, p99, idle
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(d, ignore_errors=True)


def run_all(runs: int, quick: bool, emit: Callable[..., Any]) -> None:
    """Emit W10 (in-process and remote), their latencies, and the server's idle memory."""
    customers, commands = (50, 400) if quick else (500, 4000)
    results: dict[str, list[tuple[float, float, float, float]]] = {}
    for mode in ("raw", "in-process", "remote"):
        log(f"W10 {mode} ...")
        results[mode] = [one_run(mode, customers, commands) for _ in range(runs)]
    raw = results["raw"]
    for mode in ("in-process", "remote"):
        mine = results[mode]
        target = "2,500 commands/s, p99 < 25 ms" if mode == "in-process" else "1,200 commands/s"
        note = (
            f"{commands} AddLoyaltyPoints over {customers} customers, {CLIENTS} concurrent "
            f"clients, logic {mode}; raw = bare grpc.aio servicer + sqlite3 append; "
            f"target >= {target}"
        )
        emit(f"W10-{mode}", "commands/s", [r[0] for r in mine], [r[0] for r in raw], note=note)
        emit(
            f"W10-{mode}-p50",
            "ms",
            [r[1] for r in mine],
            [r[1] for r in raw],
            duration=True,
            note=note,
        )
        emit(
            f"W10-{mode}-p99",
            "ms",
            [r[2] for r in mine],
            [r[2] for r in raw],
            duration=True,
            note=note,
        )
    emit(
        "W10-idle-memory",
        "MB",
        [r[3] for r in results["in-process"]],
        [r[3] for r in raw],
        duration=True,
        note="resident memory of the chronik server process 1 s after start; raw = the bare "
        "gRPC server; target < 150 MB",
    )
