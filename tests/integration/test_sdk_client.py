"""chronik.sdk.Client against a real served app: every call, typed errors with their data,
auth, timeouts, retries that never apply twice, and subscriptions that survive a restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik import errors
from chronik.sdk import Client
from chronik.server.auth import ApiKey, Auth
from chronik.server.grpc import GrpcServer
from chronik.server.wire import ERROR_DATA_KEY, error_data_from_wire, error_trailers
from chronik.testing.faults import inject
from examples.shop.app import build_app

NOTE = chronik.StreamId("note", "n1")


def customer(aggregate_id: str, type_: str = "CreateCustomer", **payload: Any) -> chronik.Command:
    body = payload or {"name": "Ada", "email": "ada@x"}
    return chronik.Command(domain="customer", aggregate_id=aggregate_id, type=type_, payload=body)


def notes(n: int, start: int = 0) -> list[chronik.EventData]:
    return [chronik.EventData("note.added", {"n": i}) for i in range(start, start + n)]


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    srv = GrpcServer(build_app("memory://"), port=0, raw_append=True)
    await srv.start()
    yield srv
    await srv.stop(1)


@pytest.fixture
async def client(server: GrpcServer) -> AsyncIterator[Client]:
    async with Client(f"127.0.0.1:{server.port}", backoff=0.05) as c:
        yield c


class CuttingProxy:
    """A TCP proxy in front of a server that cuts its connections once when told to: after
    ``cut_after`` more bytes from the server (0: at once), so the client sees UNAVAILABLE."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cut_after: int | None = None
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        def cut() -> None:
            writer.transport.abort()
            up_writer.transport.abort()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
            with contextlib.suppress(OSError):
                while chunk := await src.read(65536):
                    if down and self.cut_after is not None:
                        if len(chunk) >= self.cut_after:
                            dst.write(chunk[: self.cut_after])
                            self.cut_after = None
                            cut()
                            return
                        self.cut_after -= len(chunk)
                    dst.write(chunk)
                    await dst.drain()
            cut()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))


async def test_dispatch_and_its_retry_never_apply_twice(server: GrpcServer) -> None:
    """A command gets its id before the first try: a reply lost after the commit is retried
    on UNAVAILABLE and answered as a duplicate, with the events stored once."""
    proxy = CuttingProxy(server.port)
    port = await proxy.start()
    try:
        async with Client(f"127.0.0.1:{port}", backoff=0.05) as client:
            await client.dispatch(customer("warmup"))  # the connection is up
            command = customer("c1")
            with inject(server.app.store) as faults:

                def lose_the_reply() -> None:
                    proxy.cut_after = 0

                faults.pause("commit", lose_the_reply)
                result = await client.dispatch(command)
            assert command.command_id and result.command_id == command.command_id
            assert result.duplicate and [e.type for e in result.events] == ["CustomerCreated"]
            assert proxy.connections == 2  # the first connection was cut after the commit
            stored = [e async for e in client.read_stream(chronik.StreamId("customer", "c1"))]
            assert stored == result.events
    finally:
        await proxy.stop()


async def test_append_is_refused_unless_the_server_enables_it() -> None:
    """A server without raw appends answers PermissionDenied naming grpc.raw_append."""
    srv = GrpcServer(build_app("memory://"), port=0)
    await srv.start()
    try:
        async with Client(f"127.0.0.1:{srv.port}") as client:
            with pytest.raises(chronik.PermissionDenied, match=r"grpc\.raw_append"):
                await client.append(NOTE, notes(1))
            assert await client.stream_version(NOTE) is None
    finally:
        await srv.stop(1)


async def test_append_with_expectations_and_the_conflict_data(client: Client) -> None:
    """append honours expectations; a conflict is WrongExpectedVersion with stream, expected
    and actual as the server had them; retrying the same events stores nothing twice."""
    batch = notes(3)
    result = await client.append(NOTE, batch, chronik.NO_STREAM)
    assert (result.stream, result.first_sequence, result.last_sequence) == (NOTE, 0, 2)
    assert len(result.positions) == 3 and result.position == result.positions[-1]
    again = await client.append(NOTE, batch, chronik.NO_STREAM)  # same ids: idempotent
    assert again.last_sequence == 2 and await client.stream_version(NOTE) == 2
    with pytest.raises(chronik.WrongExpectedVersion) as info:
        await client.append(NOTE, notes(1), chronik.NO_STREAM)
    assert (info.value.stream, info.value.expected, info.value.actual) == (
        NOTE,
        chronik.NO_STREAM,
        2,
    )
    with pytest.raises(chronik.WrongExpectedVersion) as info:
        await client.append(NOTE, notes(1), 0)
    assert (info.value.expected, info.value.actual) == (0, 2)
    await client.append(NOTE, notes(1, 3), 2)
    with pytest.raises(chronik.InvalidExpectedVersion):
        await client.append(NOTE, notes(1), -1)


async def test_read_stream_both_ways_from_and_limit(client: Client) -> None:
    """read_stream reads forward or backward, from a sequence, up to a limit."""
    await client.append(NOTE, notes(5))

    async def read(**kw: Any) -> list[int]:
        return [e.sequence async for e in client.read_stream(NOTE, **kw)]

    assert await read() == [0, 1, 2, 3, 4]
    assert await read(from_sequence=2, limit=2) == [2, 3]
    assert await read(backward=True, limit=2) == [4, 3]
    assert await read(from_sequence=1, backward=True) == [1, 0]
    assert await read(from_sequence=9) == []
    assert [e.json() for e in await _all(client.read_stream(NOTE, limit=1))] == [{"n": 0}]


async def _all(events: AsyncIterator[chronik.RecordedEvent]) -> list[chronik.RecordedEvent]:
    return [e async for e in events]


async def test_read_all_filters_and_head(client: Client) -> None:
    """read_all filters by domains, types, after, before, limit and direction; head is the
    last position."""
    assert await client.head() is None
    await client.append(NOTE, notes(2))
    await client.dispatch(customer("c1"))
    await client.append(chronik.StreamId("note", "n2"), [chronik.EventData("note.pinned", {})])
    every = await _all(client.read_all())
    assert [e.type for e in every] == ["note.added", "note.added", "CustomerCreated", "note.pinned"]
    assert await client.head() == every[-1].position
    assert [e.type for e in await _all(client.read_all(domains=["customer"]))] == [
        "CustomerCreated"
    ]
    pinned = await _all(client.read_all(types=["note.pinned"]))
    assert [e.stream.aggregate_id for e in pinned] == ["n2"]
    after = await _all(client.read_all(every[1].position, limit=1))
    assert after == every[2:3]
    back = await _all(client.read_all(backward=True, before=every[3].position, domains=["note"]))
    assert back == [every[1], every[0]]


async def test_a_read_cut_short_resumes_after_the_last_event(server: GrpcServer) -> None:
    """A read whose connection drops mid-stream resumes after the last event it delivered:
    every event once, in order."""
    big = "x" * 50_000
    await server.app.store.append(
        NOTE, [chronik.EventData("note.added", {"n": i, "pad": big}) for i in range(40)]
    )
    proxy = CuttingProxy(server.port)
    port = await proxy.start()
    try:
        async with Client(f"127.0.0.1:{port}", backoff=0.05) as client:
            assert await client.stream_version(NOTE) == 39
            proxy.cut_after = 300_000  # a few events in
            events = await _all(client.read_stream(NOTE))
            assert [e.sequence for e in events] == list(range(40))
            assert proxy.connections == 2
            proxy.cut_after = 300_000
            every = await _all(client.read_all(limit=30))
            assert [e.sequence for e in every] == list(range(30))
            assert proxy.connections == 3
    finally:
        await proxy.stop()


async def test_subscribe_filters_and_resumes_after_a_position(client: Client) -> None:
    """subscribe delivers stored then live events of its filters, and resumes after a
    position without a gap or a repeat."""
    await client.append(NOTE, notes(2))
    await client.dispatch(customer("c1"))
    async with client.subscribe(domains=["note"]) as sub:
        first = [await anext(sub), await anext(sub)]
        assert [e.sequence for e in first] == [0, 1]
        await asyncio.sleep(0.2)  # the server marks the end of the stored events
        await client.append(NOTE, notes(1, 2))
        live = await anext(sub)
        assert live.sequence == 2 and sub.caught_up and sub.position == live.position
    with pytest.raises(StopAsyncIteration):
        await anext(sub)
    await client.append(NOTE, notes(1, 3))
    async with client.subscribe(first[1].position, types=["note.added"]) as resumed:
        assert [(await anext(resumed)).sequence for _ in range(2)] == [2, 3]
    assert "closed" in repr(resumed)


async def test_subscription_survives_a_server_restart(tmp_path: Path) -> None:
    """A subscription whose server restarts reconnects with backoff and resumes after the
    last event it delivered: nothing skipped, nothing twice."""
    url = f"sqlite:///{tmp_path}/events.db"
    srv = GrpcServer(build_app(url), port=0)
    port = await srv.start()
    async with Client(f"127.0.0.1:{port}", backoff=0.05, max_backoff=0.2) as client:
        for i in range(3):
            await client.dispatch(customer(f"s{i}"))
        sub = client.subscribe()
        seen = [(await anext(sub)).stream.aggregate_id for _ in range(2)]
        await srv.stop(1)
        await asyncio.sleep(0.3)  # the client meets a server that is gone
        srv = GrpcServer(build_app(url), port=port)
        await srv.start()
        try:
            await client.dispatch(customer("s3"))
            async with asyncio.timeout(10):
                seen += [(await anext(sub)).stream.aggregate_id for _ in range(2)]
            assert seen == ["s0", "s1", "s2", "s3"]
            assert sub.reconnects >= 1
            await sub.aclose()
        finally:
            await srv.stop(1)


async def test_errors_arrive_with_their_data(server: GrpcServer, client: Client) -> None:
    """CommandRejected has its reason, WrongExpectedVersion its stream/expected/actual,
    InvalidCommand its type and fields, UndecodableEvent the event that does not decode."""
    await client.dispatch(customer("c1"))
    with pytest.raises(chronik.CommandRejected) as rejected:
        await client.dispatch(customer("c1"))
    assert rejected.value.reason == "Customer already exists"
    with pytest.raises(chronik.WrongExpectedVersion) as conflict:
        await client.dispatch(
            chronik.Command(
                domain="customer",
                aggregate_id="c1",
                type="AddLoyaltyPoints",
                payload={"points": 1},
                expected_sequence=5,
            )
        )
    err = conflict.value
    assert (err.stream, err.expected, err.actual) == (chronik.StreamId("customer", "c1"), 5, 0)
    with pytest.raises(chronik.InvalidCommand) as invalid:
        await client.dispatch(customer("c2", name=3))
    assert invalid.value.command_type == "CreateCustomer"
    assert "email" in invalid.value.problems and invalid.value.fields == sorted(
        invalid.value.problems
    )
    bad = chronik.StreamId("customer", "bad")
    stored = await server.app.store.append(bad, [chronik.EventData("CustomerCreated", {"name": 5})])
    with pytest.raises(chronik.UndecodableEvent) as undecodable:
        await client.dispatch(customer("bad", "AddLoyaltyPoints", points=1))
    u = undecodable.value
    assert (u.stream, u.sequence, u.event_type, u.schema_version) == (
        "customer/bad",
        0,
        "CustomerCreated",
        1,
    )
    assert u.event_id and stored.first_sequence == 0 and "upcaster" in u.repair


async def test_auth_with_an_api_key_or_a_bearer_token() -> None:
    """api_key and token authenticate; none is AuthenticationError; the repr names the kind
    of credentials, never the secret."""
    auth = Auth([ApiKey(name="ops", key="ops-secret-1", commands={"customer": "*"})])
    srv = GrpcServer(build_app("memory://"), port=0, auth=auth)
    await srv.start()
    address = f"127.0.0.1:{srv.port}"
    try:
        async with Client(address, api_key="ops-secret-1") as keyed:
            await keyed.dispatch(customer("a1"))
            assert "api key" in repr(keyed) and "ops-secret-1" not in repr(keyed)
        async with Client(address, token="ops-secret-1") as bearer:
            assert await bearer.stream_version(chronik.StreamId("customer", "a1")) == 0
            assert "bearer" in repr(bearer)
        async with Client(address) as anonymous:
            with pytest.raises(chronik.AuthenticationError):
                await anonymous.head()
        with pytest.raises(chronik.ConfigurationError):
            Client(address, api_key="a", token="b")
    finally:
        await srv.stop(1)


async def test_timeouts_per_call() -> None:
    """A call that outlives its timeout is ServiceUnavailable, in about that time."""
    app = build_app("memory://")

    async def slow(command: chronik.Command, state: Any, call_next: Any) -> list[Any]:
        await asyncio.sleep(1)
        result: list[Any] = await call_next(command, state)
        return result

    app.use_handler(slow)
    srv = GrpcServer(app, port=0)
    await srv.start()
    try:
        async with Client(f"127.0.0.1:{srv.port}", timeout=5) as client:
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(chronik.ServiceUnavailable, match="no answer in time"):
                await client.dispatch(customer("t1"), timeout=0.2)
            assert loop.time() - began < 0.8
    finally:
        await srv.stop(2)


async def test_unavailable_is_retried_until_the_server_answers() -> None:
    """An idempotent call to a server that is not up yet is retried with backoff and
    succeeds once it is; with no retries left it is ServiceUnavailable."""
    srv = GrpcServer(build_app("memory://"), port=0)
    port = await srv.start()
    await srv.stop(0)
    async with Client(f"127.0.0.1:{port}", retries=0) as impatient:
        with pytest.raises(chronik.ServiceUnavailable):
            await impatient.health()
    async with Client(f"127.0.0.1:{port}", retries=20, backoff=0.05, max_backoff=0.2) as client:
        call = asyncio.ensure_future(client.dispatch(customer("r1")))
        await asyncio.sleep(0.3)
        assert not call.done()
        srv = GrpcServer(build_app("memory://"), port=port)
        await srv.start()
        try:
            result = await call
            assert result.version == 0 and not result.duplicate
        finally:
            await srv.stop(1)


async def test_health_and_lifecycle(client: Client) -> None:
    """health reports SERVING (and SERVICE_UNKNOWN for a service it does not serve); the
    repr shows the state; a closed client refuses calls with a typed error."""
    assert await client.health() == "SERVING"
    assert await client.health("chronik.v1.EventStore") == "SERVING"
    assert await client.health("nope.Service") == "SERVICE_UNKNOWN"
    assert "open" in repr(client) and "no auth" in repr(client)
    await client.close()
    assert client.closed and "closed" in repr(client)
    with pytest.raises(chronik.ServiceUnavailable, match="closed"):
        await client.health()


@pytest.mark.parametrize(
    "err",
    [
        errors.WrongExpectedVersion(chronik.StreamId("a", "b", "t"), chronik.STREAM_EXISTS, None),
        errors.PayloadTooLarge(10, 5),
        errors.UnknownCommandType("d", "C", ["A"]),
        errors.HandlerError("d", "C", ValueError("x")),
        errors.CheckpointFenced("p", 0, 1, 2),
        errors.StoreUnavailable("down", outcome_unknown=True),
        errors.InvalidValue("payload.a", "nesting too deep"),
        errors.AdminWritesDisabled(),
        errors.ConcurrencyError("plain"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_error_data_round_trips(err: errors.ChronikError) -> None:
    """An error's class, message and fields survive the trailers and from_data."""
    trailers = dict(error_trailers(err))
    data = error_data_from_wire(trailers.get(ERROR_DATA_KEY, "{}"))
    back = type(err).from_data(str(err), data)
    assert type(back) is type(err) and str(back) == str(err)
    assert vars(back) == vars(err)


def test_error_data_too_large_is_left_out() -> None:
    """Fields over MAX_ERROR_DATA are not sent (the class still is); the rebuilt error keeps
    the message."""
    err = errors.InvalidCommand("C", {f"f{i}": "x" * 100 for i in range(100)})
    trailers = dict(error_trailers(err))
    assert ERROR_DATA_KEY not in trailers and trailers["chronik-error"] == "InvalidCommand"
    back = errors.InvalidCommand.from_data(str(err))
    assert str(back) == str(err) and isinstance(back, errors.ValidationError)
