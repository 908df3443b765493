"""Overload protection: bounded in-flight commands and subscriptions answered at once with
RESOURCE_EXHAUSTED / 429 and a retry hint, per-API-key rate limits independent of each other,
and a `chronik serve` flooded by many clients that stays bounded and serves normally after."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

import chronik
from chronik.commands import CommandResult
from chronik.errors import ChronikError, Overloaded, RateLimited
from chronik.sdk import Client
from chronik.server.auth import Auth
from chronik.server.grpc import GrpcServer
from chronik.server.http import create_http_app
from chronik.server.http_auth import HttpAuth
from chronik.server.http_server import HttpServer
from chronik.server.limits import Limiter, LimitsConfig, Rate
from chronik.server.wire import command_to_wire
from chronik.testing.services import free_port
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc
from examples.shop.app import build_app

ROOT = Path(__file__).resolve().parents[2]
KEYS = [
    {
        "name": "slow",
        "key": "slow-key-123",
        "commands": {"customer": "*"},
        "rate": {"per_s": 2, "burst": 2},
    },
    {
        "name": "fast",
        "key": "fast-key-123",
        "commands": {"customer": "*"},
        "rate": {"per_s": 1000, "burst": 1000},
    },
    {"name": "free", "key": "free-key-123", "commands": {"customer": "*"}},
]


def customer(aggregate_id: str) -> chronik.Command:
    """A CreateCustomer command of the shop."""
    return chronik.Command(
        domain="customer",
        aggregate_id=aggregate_id,
        type="CreateCustomer",
        payload={"name": "Ada", "email": "ada@x"},
    )


def command_body(aggregate_id: str) -> dict[str, Any]:
    """The JSON of ``customer(aggregate_id)`` for POST /v1/commands."""
    return {
        "domain": "customer",
        "aggregate_id": aggregate_id,
        "type": "CreateCustomer",
        "payload": {"name": "Ada", "email": "ada@x"},
    }


class Gate:
    """A dispatch middleware holding every command until opened (commands stay in flight)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.waiting = 0

    async def __call__(
        self, command: chronik.Command, call_next: Callable[[chronik.Command], Awaitable[Any]]
    ) -> CommandResult:
        self.waiting += 1
        await self.open.wait()
        result: CommandResult = await call_next(command)
        return result

    async def until_waiting(self, n: int) -> None:
        """Wait until ``n`` commands are held."""
        async with asyncio.timeout(10):
            while self.waiting < n:
                await asyncio.sleep(0.01)


@pytest.fixture
async def gated() -> AsyncIterator[tuple[GrpcServer, HttpServer, Gate, Limiter]]:
    """gRPC and HTTP servers of one app sharing a limiter of 2 commands and 1 subscription,
    with a gate holding the commands."""
    app = build_app("memory://")
    gate = Gate()
    app.use(gate)
    limiter = Limiter(
        LimitsConfig(max_inflight_commands=2, max_subscriptions=1, retry_after_ms=250)
    )
    server = GrpcServer(app, port=0, limiter=limiter)
    await server.start()
    http = HttpServer(create_http_app(app, limiter=limiter), "127.0.0.1", 0)
    await http.start()
    yield server, http, gate, limiter
    gate.open.set()
    await http.stop()
    await server.stop(1)


async def test_commands_past_the_limit_are_refused_at_once_on_both_apis(
    gated: tuple[GrpcServer, HttpServer, Gate, Limiter],
) -> None:
    """With 2 commands in flight (one per API), a third is RESOURCE_EXHAUSTED with a
    retry-after-ms trailer over gRPC and 429 with Retry-After over HTTP, answered at once;
    once the two finish, commands are served again."""
    server, http, gate, limiter = gated
    async with (
        Client(f"127.0.0.1:{server.port}", retries=0) as client,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}", timeout=10) as web,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        held = [
            asyncio.create_task(client.dispatch(customer("held-1"))),
            asyncio.create_task(web.post("/v1/commands", json=command_body("held-2"))),
        ]
        await gate.until_waiting(2)
        assert limiter.inflight_commands == 2
        started = time.monotonic()
        with pytest.raises(Overloaded) as refused:
            await client.dispatch(customer("c3"))
        assert refused.value.limit == "limits.max_inflight_commands"
        assert refused.value.retry_after_ms == 250
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await rpc.CommandGatewayStub(channel).Handle(command_to_wire(customer("c4")))  # type: ignore[no-untyped-call]
        assert raw.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ("retry-after-ms", "250") in tuple(raw.value.trailing_metadata() or ())
        answer = await web.post("/v1/commands", json=command_body("c5"))
        assert answer.status_code == 429 and answer.headers["retry-after"] == "1"
        problem = answer.json()
        assert problem["title"] == "Overloaded" and problem["retry_after_ms"] == 250
        assert problem["limit"] == "limits.max_inflight_commands"
        assert time.monotonic() - started < 2.0  # refused at once, never queued
        assert gate.waiting == 2  # the refused commands never reached the app
        gate.open.set()
        first, second = await asyncio.gather(*held)
        assert isinstance(first, CommandResult) and second.status_code == 200
        assert limiter.inflight_commands == 0
        assert (await client.dispatch(customer("c6"))).version == 0
        assert limiter.refused == {"limits.max_inflight_commands": 3}
        metrics = (await web.get("/metrics")).text
        assert (
            'chronik_refused_requests_total{api="grpc",limit="limits.max_inflight_commands"} 2.0'
            in metrics
        )
        assert (
            'chronik_refused_requests_total{api="http",limit="limits.max_inflight_commands"} 1.0'
            in metrics
        )


async def test_the_client_retries_after_the_servers_hint(
    gated: tuple[GrpcServer, HttpServer, Gate, Limiter],
) -> None:
    """A client with retries waits the hint a full node names and tries again: once the slots
    are free, its command goes through (once); with no retries left it raises Overloaded."""
    server, _, gate, limiter = gated
    address = f"127.0.0.1:{server.port}"
    async with Client(address, retries=0) as holder, Client(address, retries=20) as patient:
        held = [asyncio.create_task(holder.dispatch(customer(f"held-{i}"))) for i in range(2)]
        await gate.until_waiting(2)
        waiting = asyncio.create_task(patient.dispatch(customer("patient")))
        async with asyncio.timeout(10):
            while not limiter.refused:
                await asyncio.sleep(0.01)
        assert not waiting.done()  # refused, waiting its hint (250 ms), not failed
        gate.open.set()
        result = await waiting
        assert result.version == 0 and not result.duplicate
        await asyncio.gather(*held)
        assert limiter.refused["limits.max_inflight_commands"] >= 1


async def test_subscriptions_past_the_limit_are_refused(
    gated: tuple[GrpcServer, HttpServer, Gate, Limiter],
) -> None:
    """With one subscription open, another gRPC Subscribe is RESOURCE_EXHAUSTED and an SSE
    stream 429; closing the first frees its slot."""
    server, http, _, limiter = gated
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = rpc.EventStoreStub(channel)  # type: ignore[no-untyped-call]
        first = stub.Subscribe(pb.SubscribeRequest())
        await first.read()  # the caught-up marker: the stream is open
        assert limiter.subscriptions == 1
        second = stub.Subscribe(pb.SubscribeRequest())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await second.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as web:
            sse = await web.get("/v1/events/stream")
            assert sse.status_code == 429 and sse.json()["limit"] == "limits.max_subscriptions"
            first.cancel()
            async with asyncio.timeout(10):
                while limiter.subscriptions:
                    await asyncio.sleep(0.01)
            async with web.stream("GET", "/v1/events/stream") as live:
                assert live.status_code == 200
                assert limiter.subscriptions == 1


async def test_rate_limits_per_api_key_are_independent() -> None:
    """A key over its rate is RateLimited (gRPC) / 429 (HTTP) with the wait for its next
    token, while other keys go on being served; after the wait the key is served again."""
    app = build_app("memory://")
    auth = Auth.from_config(KEYS)
    assert auth is not None
    limiter = Limiter.from_config(LimitsConfig(), KEYS)
    server = GrpcServer(app, port=0, auth=auth, limiter=limiter)
    await server.start()
    http = HttpServer(create_http_app(app, auth=HttpAuth(auth), limiter=limiter), "127.0.0.1", 0)
    await http.start()
    try:
        address = f"127.0.0.1:{server.port}"
        async with (
            Client(address, api_key="slow-key-123", retries=0) as slow,
            Client(address, api_key="fast-key-123", retries=0) as fast,
            Client(address, api_key="free-key-123", retries=0) as free,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as web,
        ):
            await slow.dispatch(customer("s1"))
            await slow.dispatch(customer("s2"))  # the burst of 2 is spent
            with pytest.raises(RateLimited) as limited:
                await slow.dispatch(customer("s3"))
            assert limited.value.key == "slow" and 0 < limited.value.retry_after_ms <= 500
            answer = await web.post(
                "/v1/commands", json=command_body("s4"), headers={"x-api-key": "slow-key-123"}
            )
            assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1
            assert answer.json()["title"] == "RateLimited" and answer.json()["key"] == "slow"
            for i in range(20):  # the other keys are not slowed down by the slow one
                await fast.dispatch(customer(f"f{i}"))
                await free.dispatch(customer(f"x{i}"))
            served = await web.post(
                "/v1/commands", json=command_body("f-http"), headers={"x-api-key": "fast-key-123"}
            )
            assert served.status_code == 200
            unknown = await web.get("/v1/streams", headers={"x-api-key": "nobody-123456"})
            assert unknown.status_code == 401  # not counted against anybody
            await asyncio.sleep(limited.value.retry_after_ms / 1000 + 0.05)
            assert (await slow.dispatch(customer("s5"))).version == 0
            assert set(limiter.refused) == {"auth.api_keys[slow].rate"}
    finally:
        await http.stop()
        await server.stop(1)


def test_limits_config_is_validated() -> None:
    """A rate without per_s, or a limit below 1, is a ConfigurationError naming the field."""
    bad = [{"name": "k", "key": "k" * 8, "rate": {"burst": 3}}]
    with pytest.raises(ChronikError, match=r"auth\.api_keys\[0\]\.rate"):
        Limiter.from_config(LimitsConfig(), bad)
    import msgspec

    with pytest.raises(msgspec.ValidationError, match="max_inflight_commands"):
        msgspec.convert({"max_inflight_commands": 0}, LimitsConfig)
    assert Rate(per_s=1.5).burst == 1


# --- a flood against `chronik serve` -----------------------------------------------------------


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` (KiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def test_a_flooded_node_pushes_back_stays_bounded_and_recovers(tmp_path: Path) -> None:
    """128 gRPC and 32 HTTP clients send commands as fast as they can for 4 s at a node limited
    to 2 in-flight commands: it refuses with retry hints (never another error), its memory
    stays within a bound, it does not crash, and once the flood stops commands are answered
    as fast as before it."""
    grpc_port, http_port = free_port(), free_port()
    config = tmp_path / "chronik.yaml"
    config.write_text(
        f"store: sqlite:///{tmp_path / 'events.db'}\napp: examples.shop.app:build_app\n"
        f"grpc: {{port: {grpc_port}}}\nhttp: {{port: {http_port}}}\n"
        "limits: {max_inflight_commands: 2, max_subscriptions: 8, retry_after_ms: 50}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHRONIK_STORE": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "chronik.cli", "serve", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = ""
        while "limits:" not in out:
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line, (out, proc.stderr.read())
            out += line
        assert "in-flight commands 2" in out, out
        address = f"127.0.0.1:{grpc_port}"
        async with (
            Client(address, retries=0, timeout=10) as client,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{http_port}",
                timeout=10,
                limits=httpx.Limits(max_connections=64),
            ) as web,
        ):

            async def latencies(prefix: str, n: int = 30) -> list[float]:
                took = []
                for i in range(n):
                    start = time.perf_counter()
                    await client.dispatch(customer(f"{prefix}-{i}"))
                    took.append(time.perf_counter() - start)
                return took

            before = statistics.median(await latencies("warm"))
            baseline = rss_kib(proc.pid)
            outcomes: dict[str, int] = {}
            hints: set[int] = set()
            stop_at = time.monotonic() + 4.0

            def count(kind: str) -> None:
                outcomes[kind] = outcomes.get(kind, 0) + 1

            async def grpc_flooder(n: int) -> None:
                async with Client(address, retries=0, timeout=10) as mine:
                    i = 0
                    while time.monotonic() < stop_at:
                        i += 1
                        try:
                            await mine.dispatch(customer(f"g{n}-{i}"))
                            count("ok")
                        except Overloaded as exc:
                            count("grpc refused")
                            hints.add(exc.retry_after_ms)

            async def http_flooder(n: int) -> None:
                i = 0
                while time.monotonic() < stop_at:
                    i += 1
                    answer = await web.post("/v1/commands", json=command_body(f"h{n}-{i}"))
                    if answer.status_code == 200:
                        count("ok")
                    else:
                        assert answer.status_code == 429, answer.text
                        assert answer.headers["retry-after"] == "1"
                        count("http refused")

            peak = baseline

            async def watch_memory() -> None:
                nonlocal peak
                while time.monotonic() < stop_at:
                    peak = max(peak, rss_kib(proc.pid))
                    await asyncio.sleep(0.1)

            await asyncio.gather(
                *(grpc_flooder(n) for n in range(128)),
                *(http_flooder(n) for n in range(32)),
                watch_memory(),
            )
            assert proc.poll() is None, proc.stderr.read()
            assert outcomes.get("grpc refused", 0) > 0 and outcomes.get("http refused", 0) > 0
            assert outcomes.get("ok", 0) > 0, outcomes
            assert hints == {50}
            # generous: the flood may grow the heap a little, never by a queue of requests
            assert peak - baseline < 150 * 1024, (baseline, peak, outcomes)
            after = statistics.median(await latencies("after"))
            assert after < max(5 * before, 0.05), (before, after, outcomes)
            metrics = (await web.get("/metrics")).text
            assert 'chronik_refused_requests_total{api="grpc"' in metrics
            assert "chronik_inflight_commands 0.0" in metrics
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, None, 30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
