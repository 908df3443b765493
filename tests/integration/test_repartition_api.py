"""Repartition over the wire: ``POST /v1/projections/{name}/repartition?partitions=N``, gRPC
``Projections.Repartition`` and the CLI, each against a served app running a partitioned
projection; refusals are 400 / INVALID_ARGUMENT / ``error:`` naming the field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from typer.testing import CliRunner

import chronik
from chronik.cli import _build
from chronik.projections import ProjectionRunner, query
from chronik.projections.bookkeeping import load_plan
from chronik.server.grpc import GrpcServer
from chronik.server.http import create_http_app
from chronik.server.http_server import HttpServer
from chronik.store.tables import DEAD_LETTERS, LEASES, PLANS, REQUESTS, STATUS
from chronik.testing.takeover import NAME, drill_projection, expected_rows
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc
from examples.shop.app import build_app


async def _ticks(store: chronik.EventStore, n: int) -> None:
    for i in range(n):
        stream = chronik.StreamId("drill", f"s{i % 9}")
        await store.append(stream, [chronik.EventData("tick", {"i": i})])


async def _split(store: chronik.EventStore, partitions: int) -> None:
    """Wait until the plan serves ``partitions`` and the rows equal the fold (on a timeout, the
    failure shows the plan, the rows and the bookkeeping tables)."""
    plan = rows = None
    try:
        async with asyncio.timeout(15):
            while True:
                plan = await load_plan(store, NAME)
                if plan is not None and plan.partitions == partitions:
                    rows = await query(store, NAME, "takeover_rows", order_by=("id",))
                    if rows == await expected_rows(store):
                        return
                await asyncio.sleep(0.02)
    except TimeoutError:
        shown = (DEAD_LETTERS, LEASES, PLANS, REQUESTS, STATUS)
        tables = {t.name: await store.read_table(t.name) for t in shown}
        raise AssertionError(
            f"not {partitions} partitions with the fold's rows in 15 s: plan {plan}, rows "
            f"{rows}, expected {await expected_rows(store)}, {tables}"
        ) from None


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Any, int, int]]:
    """An app on SQLite running the drill projection in 3 partitions, served over HTTP and
    gRPC (admin writes on): (app, HTTP port, gRPC port)."""
    app = build_app(f"sqlite:///{tmp_path}/r.db")
    await app.open()
    await _ticks(app.store, 60)
    runner = ProjectionRunner(app.store, [drill_projection(3)], heartbeat=0.05, lease_ttl=1.0)
    await runner.start()
    http = HttpServer(create_http_app(app, runner=runner, admin_writes=True), port=0)
    await http.start()
    grpc_server = GrpcServer(app, port=0, admin_writes=True)
    await grpc_server.start()
    try:
        await _split(app.store, 3)
        yield app, http.port, grpc_server.port
    finally:
        await grpc_server.stop(1)
        await http.stop()
        await runner.stop()
        await app.close()


async def test_http_grpc_and_cli_repartition(served: tuple[Any, int, int], tmp_path: Path) -> None:
    """HTTP 3 -> 5, gRPC 5 -> 2, the CLI 2 -> 4: each switches, the rows stay the fold;
    bad counts are refused naming ``partitions``."""
    app, http_port, grpc_port = served
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as c:
        r = await c.post(f"/v1/projections/{NAME}/repartition", params={"partitions": 5})
        assert r.status_code == 202, r.text
        assert r.json()["partitions"] == 5 and r.json()["action"] == "repartition"
        await _ticks(app.store, 20)
        await _split(app.store, 5)
        for bad in ("1", "300", "x", None):
            params = {} if bad is None else {"partitions": bad}
            r = await c.post(f"/v1/projections/{NAME}/repartition", params=params)
            assert r.status_code == 400, r.text
            assert "partitions" in r.text
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = rpc.ProjectionsStub(channel)  # type: ignore[no-untyped-call]
        reply = await stub.Repartition(pb.RepartitionRequest(name=NAME, partitions=2))
        assert reply.action == "repartition" and reply.projection == NAME
        await _split(app.store, 2)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Repartition(pb.RepartitionRequest(name=NAME, partitions=2))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "already runs 2 partitions" in str(caught.value.details())
    url = f"sqlite:///{tmp_path}/r.db"
    args = ["projections", "repartition", NAME, "--partitions", "4", "--store", url]
    result = await asyncio.to_thread(lambda: CliRunner().invoke(_build(), args))
    assert result.exit_code == 0, result.output
    assert f"repartitioned {NAME}: 4 partitions from position" in result.stdout
    await _split(app.store, 4)
    bad_args = [*args[:-3], "1", *args[-2:]]
    refused = await asyncio.to_thread(lambda: CliRunner().invoke(_build(), bad_args))
    assert refused.exit_code == 1 and "partitions" in refused.output
