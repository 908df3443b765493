"""The gRPC edge under bad input, faults and operator mistakes: typed statuses, nothing stored."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import msgspec
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import chronik
from chronik import errors
from chronik.sdk import Client, serve_business_logic
from chronik.server.grpc import GrpcServer, status_for
from chronik.server.http_server import HttpServer
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc
from examples.shop.app import build_app
from examples.shop.customer import customer

CODE = grpc.StatusCode
TOO_BIG = "100000000000000000000"  # beyond int64


def create(aggregate_id: str) -> chronik.Command:
    return chronik.Command(
        domain="customer",
        aggregate_id=aggregate_id,
        type="CreateCustomer",
        payload={"name": "Ada", "email": "ada@x"},
    )


async def served(tmp_path: Path, **options: Any) -> GrpcServer:
    srv = GrpcServer(build_app(f"sqlite:///{tmp_path / 'events.db'}"), port=0, **options)
    await srv.start()
    return srv


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GrpcServer]:
    srv = await served(tmp_path, raw_append=True)
    yield srv
    await srv.stop(1)


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    options = [("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as ch:
        yield ch


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        result = call()
        if hasattr(result, "__aiter__"):
            _ = [item async for item in result]
        else:
            await result
    return info.value


def append(domain: str, aggregate_id: str, *events: pb.NewEvent) -> pb.AppendRequest:
    return pb.AppendRequest(domain=domain, aggregate_id=aggregate_id, events=list(events))


async def stored(server: GrpcServer, domain: str, aggregate_id: str) -> int:
    stream = chronik.StreamId(domain, aggregate_id)
    return len([e async for e in server.app.store.read_stream(stream)])


# --- the raw append ---------------------------------------------------------------------------


async def test_raw_append_is_off_by_default(tmp_path: Path) -> None:
    """Without raw_append, EventStore.Append is PERMISSION_DENIED naming the config key."""
    srv = await served(tmp_path)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            request = append("note", "n1", pb.NewEvent(type="note.added", payload=b"{}"))
            err = await refused(lambda: rpc.EventStoreStub(ch).Append(request))
        assert err.code() == CODE.PERMISSION_DENIED
        assert "grpc.raw_append: true" in (err.details() or "")
        assert await stored(srv, "note", "n1") == 0
    finally:
        await srv.stop(1)


async def test_raw_append_checks_registered_schemas(
    server: GrpcServer, channel: grpc.aio.Channel
) -> None:
    """A payload that does not fit its registered type, or a type no model of the domain
    knows, is INVALID_ARGUMENT naming the field; the stream stays usable for commands."""
    events = rpc.EventStoreStub(channel)
    poison = append("customer", "p1", pb.NewEvent(type="CustomerCreated", payload=b'{"foo": 1}'))
    err = await refused(lambda: events.Append(poison))
    assert err.code() == CODE.INVALID_ARGUMENT
    assert "events[0].payload" in (err.details() or "") and "name" in (err.details() or "")
    stranger = append("customer", "p1", pb.NewEvent(type="Deposited", payload=b'{"foo": 1}'))
    err = await refused(lambda: events.Append(stranger))
    assert err.code() == CODE.INVALID_ARGUMENT and "events[0].type" in (err.details() or "")
    binary = pb.NewEvent(type="CustomerCreated", payload=b"\x00", content_type="x/bin")
    err = await refused(lambda: events.Append(append("customer", "p1", binary)))
    assert err.code() == CODE.INVALID_ARGUMENT and "content_type" in (err.details() or "")
    assert await stored(server, "customer", "p1") == 0
    good = pb.NewEvent(type="CustomerCreated", payload=b'{"name": "Ada", "email": "a@x"}')
    await events.Append(append("customer", "p1", good))
    async with Client(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(chronik.CommandRejected, match="already exists"):
            await client.dispatch(create("p1"))  # the appended event loads
    await events.Append(append("notes", "n1", pb.NewEvent(type="anything", payload=b"[1]")))


async def test_raw_append_upcasts_older_versions_before_checking(tmp_path: Path) -> None:
    """An event at an older schema version is upcast, then checked against the class."""
    registry = chronik.EventRegistry()

    @registry.event("Named", version=2)
    class Named(msgspec.Struct):
        full_name: str

    registry.add_upcaster("Named", 1, lambda p: {"full_name": p["name"]})
    app = chronik.Chronik(store="memory://", registry=registry)
    app.add_decider("person", lambda c, s: [], lambda s, e: s)
    srv = GrpcServer(app, port=0, raw_append=True)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            events = rpc.EventStoreStub(ch)
            old = pb.NewEvent(type="Named", schema_version=1, payload=b'{"name": "Ada"}')
            await events.Append(append("person", "a", old))
            broken = pb.NewEvent(type="Named", schema_version=1, payload=b'{"nick": "A"}')
            err = await refused(lambda: events.Append(append("person", "b", broken)))
            assert err.code() == CODE.INVALID_ARGUMENT and "schema_version" in str(err.details())
            future = pb.NewEvent(type="Named", schema_version=3, payload=b'{"full_name": "A"}')
            err = await refused(lambda: events.Append(append("person", "c", future)))
            assert err.code() == CODE.INVALID_ARGUMENT and "newer" in str(err.details())
    finally:
        await srv.stop(1)


# --- malformed, oversized and out-of-range input -----------------------------------------------

METHODS = [
    ("/chronik.v1.CommandGateway/Handle", False),
    ("/chronik.v1.EventStore/Append", False),
    ("/chronik.v1.EventStore/ReadStream", True),
    ("/chronik.v1.EventStore/ReadAll", True),
    ("/chronik.v1.EventStore/Subscribe", True),
    ("/grpc.health.v1.Health/Check", False),
]


async def test_malformed_protobuf_is_invalid_argument_and_logged_once(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are not the method's message are INVALID_ARGUMENT on every method, and a
    flood of them is logged once per method and window, without a traceback."""
    caplog.set_level(logging.WARNING, logger="chronik.server")
    for method, streaming in METHODS:
        call = (channel.unary_stream if streaming else channel.unary_unary)(method)
        for body in (bytes.fromhex("0a02fffe"), b"\xff" * 7, b"\x0a\x80"):
            err = await refused(lambda call=call, body=body: call(body))
            assert err.code() == CODE.INVALID_ARGUMENT, (method, err)
            assert "malformed request" in (err.details() or "")
    logged = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(logged) == len(METHODS)
    assert all(r.exc_info is None for r in logged)


async def test_oversized_messages_are_resource_exhausted(tmp_path: Path) -> None:
    """Over grpc.max_message_bytes a call is RESOURCE_EXHAUSTED stating the limit; the SDK
    client raises MessageTooLarge; a message under the limit still works."""
    srv = await served(tmp_path, max_message_bytes=64 * 1024)
    try:
        big = create("big")
        big.payload = {"name": "x" * 100_000, "email": "a@x"}
        options = [("grpc.max_send_message_length", 1 << 20)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}", options=options) as ch:
            request = pb.CommandRequest(
                domain="customer",
                aggregate_id="big",
                type="CreateCustomer",
                payload=msgspec.json.encode(big.payload),
            )
            err = await refused(lambda: rpc.CommandGatewayStub(ch).Handle(request))
        assert err.code() == CODE.RESOURCE_EXHAUSTED and "65536" in (err.details() or "")
        async with Client(f"127.0.0.1:{srv.port}") as client:
            with pytest.raises(errors.MessageTooLarge, match="max_message_bytes"):
                await client.dispatch(
                    chronik.Command(
                        domain="customer",
                        aggregate_id="big",
                        type="CreateCustomer",
                        payload={"name": "x" * (5 << 20), "email": "a@x"},
                    )
                )
            await client.dispatch(create("small"))
    finally:
        await srv.stop(1)


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("ReadAll", pb.ReadAllRequest(after=TOO_BIG), "after"),
        ("ReadAll", pb.ReadAllRequest(before="-3"), "before"),
        ("ReadAll", pb.ReadAllRequest(after="x:y"), "after"),
        ("Subscribe", pb.SubscribeRequest(after=TOO_BIG), "after"),
        ("Subscribe", pb.SubscribeRequest(after="9223372036854775808"), "after"),
        (
            "ReadStream",
            pb.ReadStreamRequest(domain="customer", aggregate_id="c", from_sequence=2**64 - 1),
            "from_sequence",
        ),
        (
            "Append",
            pb.AppendRequest(
                domain="note",
                aggregate_id="n",
                sequence=2**63,
                events=[pb.NewEvent(type="t", payload=b"{}")],
            ),
            "sequence",
        ),
    ],
)
async def test_positions_and_sequences_beyond_int64(
    channel: grpc.aio.Channel, method: str, request_: Any, field: str
) -> None:
    """Positions and sequences that are malformed or beyond int64 are INVALID_ARGUMENT
    naming the field (they used to be INTERNAL from the database driver)."""
    stub = rpc.EventStoreStub(channel)
    err = await refused(lambda: getattr(stub, method)(request_))
    assert err.code() == CODE.INVALID_ARGUMENT, err
    assert field in (err.details() or "")


NESTED = b"[" * 3000 + b"]" * 3000


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"name": ' + NESTED + b', "email": "a@x"}', "payload"),
        (b'{"name": "A", "email": "a@x", "n": 123456789012345678901234567890}', "payload.n"),
        (b'{"name": "A", "email": "\\ud800"}', "payload"),
        (b'{"name": NaN, "email": "a@x"}', "payload"),
    ],
)
async def test_hostile_json_payloads(
    server: GrpcServer, channel: grpc.aio.Channel, payload: bytes, field: str
) -> None:
    """Deep nesting, huge ints, lone surrogates and NaN in payload JSON are INVALID_ARGUMENT
    naming the field, through CommandGateway and EventStore.Append alike; nothing is stored."""
    command = pb.CommandRequest(
        domain="customer", aggregate_id="h", type="CreateCustomer", payload=payload
    )
    err = await refused(lambda: rpc.CommandGatewayStub(channel).Handle(command))
    assert err.code() == CODE.INVALID_ARGUMENT and field in (err.details() or ""), err
    raw = append("notes", "h", pb.NewEvent(type="note.added", payload=payload))
    err = await refused(lambda: rpc.EventStoreStub(channel).Append(raw))
    assert err.code() == CODE.INVALID_ARGUMENT, err
    assert await stored(server, "customer", "h") == await stored(server, "notes", "h") == 0


# --- errors and bugs ----------------------------------------------------------------------------


def test_every_chronik_error_has_its_own_status() -> None:
    """status_for maps each chronik error class to a specific code; INTERNAL is left for bugs
    (and HandlerError, which is a bug in business logic) and UNKNOWN is never used."""
    for name in errors.__all__:
        if name == "ChronikError":
            continue  # the base class: only its subclasses are raised
        cls = getattr(errors, name)
        code = status_for(cls.__new__(cls))
        assert code != CODE.UNKNOWN, name
        assert (code == CODE.INTERNAL) == (name == "HandlerError"), name
    assert status_for(RuntimeError("boom")) == CODE.INTERNAL


async def test_a_bug_is_internal_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception that is not a chronik error is INTERNAL without details on the wire,
    logged with its traceback once (not once per call); the next good call works."""
    app = build_app(f"sqlite:///{tmp_path / 'events.db'}")
    broken = {"on": True}

    async def buggy(command: chronik.Command, call_next: Any) -> Any:
        if broken["on"]:
            raise KeyError("a bug")
        return await call_next(command)

    app.use(buggy)
    srv = GrpcServer(app, port=0)
    await srv.start()
    caplog.set_level(logging.ERROR, logger="chronik.server")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            request = pb.CommandRequest(
                domain="customer",
                aggregate_id="b",
                type="CreateCustomer",
                payload=b'{"name": "A", "email": "a@x"}',
            )
            for _ in range(5):
                err = await refused(lambda: rpc.CommandGatewayStub(ch).Handle(request))
                assert err.code() == CODE.INTERNAL and err.details() == "internal error"
            broken["on"] = False
            await rpc.CommandGatewayStub(ch).Handle(request)
        bugs = [r for r in caplog.records if "unexpected error" in r.getMessage()]
        assert len(bugs) == 1 and bugs[0].exc_info is not None
    finally:
        await srv.stop(1)


# --- health and ports ---------------------------------------------------------------------------


async def test_health_is_serving_only_while_the_store_works(server: GrpcServer) -> None:
    """gRPC health asks the store: once the store is closed under the server it says
    NOT_SERVING, for the whole server and its services."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "chronik.v1.EventStore"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await server.app.store.close()
        for name in ("", "chronik.v1.EventStore"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_taken_grpc_port_is_a_typed_error(server: GrpcServer, tmp_path: Path) -> None:
    """A second gRPC server on a port in use raises PortInUse naming it (no SO_REUSEPORT
    sharing), and leaves its app closed; the first server keeps serving."""
    second = GrpcServer(build_app(f"sqlite:///{tmp_path / 'other.db'}"), port=server.port)
    with pytest.raises(errors.PortInUse, match=f"gRPC port 127.0.0.1:{server.port} is in use"):
        await second.start()
    await second.stop(0)  # what `chronik serve` does after a failed start: no error
    async with Client(f"127.0.0.1:{server.port}") as client:
        await client.dispatch(create("still-served"))
    with pytest.raises(errors.PortInUse):
        await serve_business_logic(customer, server.app.registry, f"127.0.0.1:{server.port}")


async def test_a_taken_http_port_is_a_typed_error() -> None:
    """HttpServer.start on a port another socket listens on raises PortInUse, not SystemExit."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]

        async def asgi(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
            raise AssertionError("never served")

        with pytest.raises(errors.PortInUse, match=f"HTTP port 127.0.0.1:{port} is in use"):
            await HttpServer(asgi, "127.0.0.1", port).start()


async def test_the_guarded_handler_of_a_method_is_made_once() -> None:
    """The interceptor wraps a method's handler once and hands the same wrapper out while the
    server hands out the same handler (no closures per call); a new handler is wrapped anew."""
    from chronik.server.grpc_edge import EdgeInterceptor

    async def handle(request: Any, context: Any) -> Any:
        return request

    first = grpc.unary_unary_rpc_method_handler(handle, bytes, bytes)
    second = grpc.unary_unary_rpc_method_handler(handle, bytes, bytes)
    current = first

    async def continuation(details: Any) -> Any:
        return current

    class Details:
        method = "/chronik.v1.CommandGateway/Handle"

    edge = EdgeInterceptor()
    made = await edge.intercept_service(continuation, Details())  # type: ignore[arg-type]
    assert made is not first and made.unary_unary is not handle
    assert await edge.intercept_service(continuation, Details()) is made  # type: ignore[arg-type]
    current = second
    again = await edge.intercept_service(continuation, Details())  # type: ignore[arg-type]
    assert again is not made
