"""The shop over the wire: the loyalty saga, the projections, remote projectors and sagas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

import chronik
from chronik.projections import ReadModel, query
from chronik.sdk import Client
from chronik.server.grpc import GrpcServer
from chronik.server.remote import remote_projector, remote_saga
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc
from examples.shop.app import build_app, projections

ITEMS = [
    {"sku": "book", "price_cents": 1500, "qty": 2},
    {"sku": "pen", "price_cents": 250, "qty": 3},
]


def cmd(domain: str, aggregate_id: str, type_: str, **payload: Any) -> chronik.Command:
    return chronik.Command(domain=domain, aggregate_id=aggregate_id, type=type_, payload=payload)


async def shop_flow(client: Client, customer: str, txn: str) -> chronik.CommandResult:
    await client.dispatch(cmd("customer", customer, "CreateCustomer", name="Ada", email="a@x"))
    await client.dispatch(
        cmd("transaction", txn, "CreateTransaction", customer_id=customer, items=ITEMS)
    )
    return await client.dispatch(cmd("transaction", txn, "CompleteTransaction"))


async def eventually(check: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


@pytest.fixture
async def shop() -> AsyncIterator[tuple[GrpcServer, Client]]:
    app = build_app("memory://")
    server = GrpcServer(app, port=0, projections=projections(app))
    await server.start()
    async with Client(f"127.0.0.1:{server.port}") as client:
        yield server, client
    await server.stop(1)


async def test_loyalty_saga_round_trip_and_projections(shop: tuple[GrpcServer, Client]) -> None:
    """Completing a transaction earns points via the saga; both read models follow."""
    server, client = shop
    done = await shop_flow(client, "c1", "t1")
    app = server.app

    async def has_points() -> bool:
        return (await app.load("customer", "c1")).points == 37

    await eventually(has_points)
    points = [e async for e in client.read_stream(chronik.StreamId("customer", "c1"))][-1]
    assert points.type == "LoyaltyPointsAdded"
    assert points.metadata.correlation_id == done.events[0].metadata.correlation_id
    assert done.events[0].event_id in (points.metadata.causation_id or "")
    assert server.runner is not None
    await server.runner.wait_for(points.position)
    assert await query(app.store, "receipts", "receipts") == [
        {"transaction_id": "t1", "customer_id": "c1", "amount_cents": 3750}
    ]
    (summary,) = await query(app.store, "customer_summary", "customer_summary")
    assert summary == {
        "customer_id": "c1",
        "name": "Ada",
        "email": "a@x",
        "loyalty_points": 37,
        "transactions": 1,
        "total_spent_cents": 3750,
    }


class RecordingProjector(rpc.ProjectorServicer):
    """A projector service that records what it was pushed."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    async def Project(self, request: pb.EventBook, context: Any) -> pb.ProjectResponse:
        for e in request.events:
            self.seen.append((e.aggregate_id, e.sequence))
        return pb.ProjectResponse()


async def start_projector(
    servicer: RecordingProjector, port: int = 0
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    rpc.add_ProjectorServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


async def test_remote_projector_gets_every_event_in_order_across_a_restart() -> None:
    """Events reach a remote projector in stream order, also when it restarts mid-way."""
    recorder = RecordingProjector()
    service, port = await start_projector(recorder)
    app = build_app("memory://")
    pusher = remote_projector(
        "mirror", f"127.0.0.1:{port}", ["CustomerCreated", "LoyaltyPointsAdded"]
    )
    pusher.policy.backoff = 0.05
    server = GrpcServer(app, port=0, projections=[pusher])
    await server.start()
    try:
        async with Client(f"127.0.0.1:{server.port}") as client:
            for i in range(3):
                await client.dispatch(
                    cmd("customer", f"c{i}", "CreateCustomer", name="A", email="e")
                )
            await eventually(lambda: _true(len(recorder.seen) >= 3))
            await service.stop(0)  # the projector goes away ...
            for i in range(3):
                await client.dispatch(cmd("customer", f"c{i}", "AddLoyaltyPoints", points=i + 1))
            await asyncio.sleep(0.2)
            service, _ = await start_projector(recorder, port)  # ... and comes back
            await eventually(lambda: _true({("c0", 1), ("c1", 1), ("c2", 1)} <= set(recorder.seen)))
        for stream in ("c0", "c1", "c2"):
            sequences = [s for a, s in recorder.seen if a == stream]
            assert sorted(set(sequences)) == [0, 1] and sequences == sorted(sequences)
    finally:
        await server.stop(1)
        await service.stop(0)


async def _true(value: bool) -> bool:
    return value


class LoyaltySaga(rpc.SagaServicer):
    """The loyalty saga as a remote service."""

    async def Handle(self, request: pb.EventBook, context: Any) -> pb.SagaResponse:
        import json

        commands = []
        for e in request.events:
            done = json.loads(e.payload)
            commands.append(
                pb.CommandRequest(
                    domain="customer",
                    aggregate_id=done["customer_id"],
                    type="AddLoyaltyPoints",
                    payload=json.dumps({"points": done["amount_cents"] // 100}).encode(),
                )
            )
        return pb.SagaResponse(commands=commands)


async def test_remote_saga_commands_are_dispatched_once() -> None:
    """A remote saga's commands are dispatched with ids derived from the event: once each."""
    saga_server = grpc.aio.server()
    rpc.add_SagaServicer_to_server(LoyaltySaga(), saga_server)
    port = saga_server.add_insecure_port("127.0.0.1:0")
    await saga_server.start()
    app = build_app("memory://")
    saga = remote_saga(
        "remote_loyalty", f"127.0.0.1:{port}", ["TransactionCompleted"], app.dispatch
    )
    server = GrpcServer(app, port=0, projections=[saga])
    await server.start()
    try:
        async with Client(f"127.0.0.1:{server.port}") as client:
            done = await shop_flow(client, "c9", "t9")

            async def has_points() -> bool:
                return (await app.load("customer", "c9")).points == 37

            await eventually(has_points)
            # the saga sees the event again (e.g. after a crash before its checkpoint): no effect
            assert server.runner is not None
            await server.runner["remote_loyalty"].stop()
            react = saga.handlers["TransactionCompleted"][0]
            await react(done.events[0], ReadModel(app.store, {}, 1))  # type: ignore[misc]
            assert (await app.load("customer", "c9")).points == 37
    finally:
        await server.stop(1)
        await saga_server.stop(0)
