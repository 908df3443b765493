"""The gRPC server end to end: commands, errors, the event store API, health, reflection, auth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import chronik
from chronik.sdk import Client
from chronik.server.auth import ApiKey, Auth
from chronik.server.grpc import GrpcServer
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc
from examples.shop.app import build_app

ITEMS = [{"sku": "book", "price_cents": 1500, "qty": 2}]


def customer(aggregate_id: str, type_: str = "CreateCustomer", **payload: Any) -> chronik.Command:
    body = payload or {"name": "Ada", "email": "ada@x"}
    return chronik.Command(domain="customer", aggregate_id=aggregate_id, type=type_, payload=body)


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    srv = GrpcServer(build_app("memory://"), port=0, raw_append=True)
    await srv.start()
    yield srv
    await srv.stop(1)


@pytest.fixture
async def client(server: GrpcServer) -> AsyncIterator[Client]:
    async with Client(f"127.0.0.1:{server.port}") as c:
        yield c


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


async def test_commands_in_events_out(client: Client) -> None:
    """A command through CommandGateway appends events and returns them; retries are idempotent."""
    first = await client.dispatch(
        chronik.Command(
            domain="customer",
            aggregate_id="c1",
            type="CreateCustomer",
            payload={"name": "Ada", "email": "ada@x"},
            command_id="cmd-1",
            metadata={"correlation_id": "req-1"},
        )
    )
    assert [e.type for e in first.events] == ["CustomerCreated"] and first.version == 0
    assert first.events[0].metadata.correlation_id == "req-1"
    assert first.events[0].json() == {"name": "Ada", "email": "ada@x"}
    again = await client.dispatch(
        chronik.Command(
            domain="customer",
            aggregate_id="c1",
            type="CreateCustomer",
            payload={"name": "Ada", "email": "ada@x"},
            command_id="cmd-1",
        )
    )
    assert again.duplicate and again.events == first.events
    stored = [e async for e in client.read_stream(chronik.StreamId("customer", "c1"))]
    assert stored == first.events


@pytest.mark.parametrize(
    ("request_", "code", "text"),
    [
        (
            pb.CommandRequest(
                domain="customer",
                aggregate_id="c1",
                type="CreateCustomer",
                payload=b'{"name": "Bo", "email": "b@x"}',
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "Customer already exists",
        ),
        (
            pb.CommandRequest(
                domain="customer", aggregate_id="c2", type="CreateCustomer", payload=b'{"name": 5}'
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "email: required",
        ),
        (
            pb.CommandRequest(
                domain="customer", aggregate_id="c2", type="CreateCustomer", payload=b"{oops"
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not valid JSON",
        ),
        (
            pb.CommandRequest(domain="warehouse", aggregate_id="w", type="Restock"),
            grpc.StatusCode.NOT_FOUND,
            "warehouse",
        ),
        (
            pb.CommandRequest(domain="customer", aggregate_id="c1", type="Delete"),
            grpc.StatusCode.NOT_FOUND,
            "Delete",
        ),
        (
            pb.CommandRequest(
                domain="customer",
                aggregate_id="c1",
                type="AddLoyaltyPoints",
                payload=b'{"points": 1}',
                expected_sequence=7,
            ),
            grpc.StatusCode.ABORTED,
            "expected 7",
        ),
        (
            pb.CommandRequest(domain="Not A Domain", aggregate_id="c1", type="X"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "domain",
        ),
    ],
)
async def test_errors_map_to_status_codes(
    client: Client,
    channel: grpc.aio.Channel,
    request_: pb.CommandRequest,
    code: grpc.StatusCode,
    text: str,
) -> None:
    """Each kind of failure has its status code and a message, and stores nothing."""
    await client.dispatch(customer("c1"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rpc.CommandGatewayStub(channel).Handle(request_)
    assert info.value.code() == code and text in (info.value.details() or "")
    assert "Traceback" not in (info.value.details() or "")
    events = [e async for e in client.read_stream(chronik.StreamId("customer", "c1"))]
    assert len(events) == 1


async def test_client_raises_the_chronik_errors(client: Client) -> None:
    """The Python client turns status codes back into chronik's error classes."""
    await client.dispatch(customer("c1"))
    with pytest.raises(chronik.CommandRejected) as info:
        await client.dispatch(customer("c1"))
    assert info.value.reason == "Customer already exists"
    with pytest.raises(chronik.InvalidCommand):
        await client.dispatch(customer("c3", name=3))
    with pytest.raises(chronik.UnknownCommandType):
        await client.dispatch(customer("c1", "Nope"))
    with pytest.raises(chronik.ConcurrencyError):
        await client.dispatch(
            chronik.Command(
                domain="customer",
                aggregate_id="c1",
                type="AddLoyaltyPoints",
                payload={"points": 1},
                expected_sequence=5,
            )
        )


async def test_event_store_append_read_and_read_all(channel: grpc.aio.Channel) -> None:
    """EventStore.Append with expectations, ReadStream both ways, ReadAll with filters."""
    store = rpc.EventStoreStub(channel)
    new = [pb.NewEvent(type="note.added", payload=b'{"n": %d}' % i) for i in range(3)]
    r = await store.Append(
        pb.AppendRequest(domain="note", aggregate_id="n1", events=new, state=pb.EXPECTED_NO_STREAM)
    )
    assert (r.first_sequence, r.last_sequence, len(r.positions)) == (0, 2, 3)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await store.Append(
            pb.AppendRequest(domain="note", aggregate_id="n1", events=new[:1], sequence=0)
        )
    assert info.value.code() == grpc.StatusCode.ABORTED
    back = [
        e
        async for e in store.ReadStream(
            pb.ReadStreamRequest(domain="note", aggregate_id="n1", backward=True, limit=2)
        )
    ]
    assert [e.sequence for e in back] == [2, 1]
    await store.Append(pb.AppendRequest(domain="other", aggregate_id="o1", events=new[:1]))
    notes = [e async for e in store.ReadAll(pb.ReadAllRequest(domains=["note"]))]
    assert [e.sequence for e in notes] == [0, 1, 2]
    after = [e async for e in store.ReadAll(pb.ReadAllRequest(after=notes[1].position))]
    assert [(e.domain, e.sequence) for e in after] == [("note", 2), ("other", 0)]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [e async for e in store.ReadAll(pb.ReadAllRequest(after="not-a-position"))]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_subscribe_catches_up_goes_live_and_resumes(
    client: Client, channel: grpc.aio.Channel
) -> None:
    """Subscribe sends stored events, a caught-up marker, live events; resuming skips none."""
    for i in range(3):
        await client.dispatch(customer(f"s{i}"))
    store = rpc.EventStoreStub(channel)
    call = store.Subscribe(pb.SubscribeRequest(domains=["customer"]))
    items = []
    while not items or not items[-1].HasField("caught_up"):
        items.append(await call.read())
    assert [i.event.aggregate_id for i in items[:3]] == ["s0", "s1", "s2"]
    assert items[3].caught_up == items[2].event.position
    await client.dispatch(customer("s3"))
    live = await call.read()
    assert live.event.aggregate_id == "s3"
    call.cancel()  # the client goes away; then comes back from its last position
    await client.dispatch(customer("s4"))
    resumed = store.Subscribe(pb.SubscribeRequest(after=live.event.position))
    first = await resumed.read()
    assert first.event.aggregate_id == "s4"
    resumed.cancel()


async def test_health_and_reflection(channel: grpc.aio.Channel) -> None:
    """Health checking reports SERVING; reflection lists chronik's services."""
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "chronik.v1.CommandGateway"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for reply in stub.ServerReflectionInfo(ask()):
        names |= {s.name for s in reply.list_services_response.service}
    assert {"chronik.v1.CommandGateway", "chronik.v1.EventStore", "chronik.v1.Catalog"} <= names


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_v1_and_v1alpha(channel: grpc.aio.Channel, version: str) -> None:
    """A raw reflection client of either protocol version lists the services (both reflection
    services among them) and gets the file describing chronik's and its own service."""
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    own = f"grpc.reflection.{version}.ServerReflection"
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="chronik.v1.Catalog"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=own),
    ]
    replies = [r async for r in call(iter(asks))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"chronik.v1.CommandGateway", "chronik.v1.Catalog"} <= names
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= (
        names
    )
    for reply, package in zip(replies[1:], ["chronik.v1", own.rsplit(".", 1)[0]], strict=True):
        assert not reply.HasField("error_response"), reply.error_response
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in reply.file_descriptor_response.file_descriptor_proto
        ]
        assert package in {f.package for f in files}


async def test_auth_keys_and_allowlists() -> None:
    """Missing or unknown keys are UNAUTHENTICATED; a command outside the allowlist is denied."""
    auth = Auth(
        [
            ApiKey(name="web", key="web-secret-1", commands={"customer": ["CreateCustomer"]}),
            ApiKey(name="ops", key="ops-secret-1", commands={"customer": "*"}, append=True),
        ]
    )
    srv = GrpcServer(build_app("memory://"), port=0, auth=auth, raw_append=True)
    await srv.start()
    address = f"127.0.0.1:{srv.port}"
    try:
        async with Client(address) as anonymous:
            with pytest.raises(chronik.AuthenticationError, match="missing"):
                await anonymous.dispatch(customer("a1"))
        async with Client(address, api_key="wrong-secret") as stranger:
            with pytest.raises(chronik.AuthenticationError, match="unknown"):
                await stranger.dispatch(customer("a1"))
        async with Client(address, api_key="web-secret-1") as web:
            await web.dispatch(customer("a1"))
            with pytest.raises(chronik.PermissionDenied):
                await web.dispatch(customer("a1", "AddLoyaltyPoints", points=5))
            assert len([e async for e in web.read_stream(chronik.StreamId("customer", "a1"))]) == 1
        async with grpc.aio.insecure_channel(address) as ch:
            append = pb.AppendRequest(
                domain="x", aggregate_id="y", events=[pb.NewEvent(type="t", payload=b"{}")]
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await rpc.EventStoreStub(ch).Append(
                    append, metadata=(("x-api-key", "web-secret-1"),)
                )
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            await rpc.EventStoreStub(ch).Append(
                append, metadata=(("authorization", "Bearer ops-secret-1"),)
            )
    finally:
        await srv.stop(1)


async def test_stop_lets_in_flight_commands_finish() -> None:
    """On stop, a running command completes, subscriptions end, new calls are refused."""
    app = build_app("memory://")
    started = asyncio.Event()

    async def slow(command: chronik.Command, state: Any, call_next: Any) -> list[Any]:
        started.set()
        await asyncio.sleep(0.3)
        result: list[Any] = await call_next(command, state)
        return result

    srv = GrpcServer(app, port=0)
    await srv.start()
    async with Client(f"127.0.0.1:{srv.port}") as c:
        await c.dispatch(customer("first"))
        app.use_handler(slow)
        events = c.subscribe(reconnect=False)  # ends with the server, instead of waiting
        assert (await anext(events)).stream.aggregate_id == "first"  # the stream is open
        follower = asyncio.create_task(anext(events))
        pending = asyncio.create_task(c.dispatch(customer("slow")))
        await started.wait()
        await srv.stop(5)
        result = await pending
        assert result.version == 0 and result.events[0].stream.aggregate_id == "slow"
        async with asyncio.timeout(2):  # the subscription ended cleanly, at once
            with pytest.raises(StopAsyncIteration):
                await follower
        with pytest.raises(chronik.ChronikError):
            await c.dispatch(customer("late"))


async def test_only_the_gateway_registers_its_methods(server: GrpcServer) -> None:
    """grpc.aio waits on one task per registered method at every call: only Handle has one."""
    tasks = [repr(t) for t in asyncio.all_tasks()]
    assert any("AioServer._request_call" in t for t in tasks), tasks  # (the look works)
    assert sum("AioServer._request_registered_call" in t for t in tasks) == 1
