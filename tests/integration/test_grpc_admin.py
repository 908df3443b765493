"""EventStore.ListStreams, Catalog.Describe and the Projections service against a real served
app, through chronik.sdk.Client: pages, filters, the admin-writes switch, rights, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import msgspec
import pytest

import chronik
from chronik import errors
from chronik.projections import ErrorPolicy, Projection, ProjectionStatus, ReadModel
from chronik.sdk import Client
from chronik.server.auth import ApiKey, Auth
from chronik.server.catalog import catalog_of
from chronik.server.config import Config
from chronik.server.grpc import GrpcServer
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc
from examples.shop.app import build_app, projections


def customer(aggregate_id: str, name: str = "Ada") -> chronik.Command:
    payload = {"name": name, "email": f"{aggregate_id}@x"}
    return chronik.Command(
        domain="customer", aggregate_id=aggregate_id, type="CreateCustomer", payload=payload
    )


async def served(**options: Any) -> GrpcServer:
    app = build_app("memory://")
    server = GrpcServer(app, port=0, **options)
    await server.start()
    return server


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    app = build_app("memory://")
    srv = GrpcServer(app, port=0, raw_append=True, projections=projections(app), admin_writes=True)
    await srv.start()
    yield srv
    await srv.stop(1)


@pytest.fixture
async def client(server: GrpcServer) -> AsyncIterator[Client]:
    async with Client(f"127.0.0.1:{server.port}", backoff=0.05) as c:
        yield c


async def _all(items: AsyncIterator[Any]) -> list[Any]:
    return [i async for i in items]


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_list_streams_pages_filters_and_tenants(server: GrpcServer, client: Client) -> None:
    """ListStreams gives what store.list_streams gives, page by page through the cursor,
    filtered by domain, aggregate id prefix and tenant (absent: every tenant)."""
    for i in range(5):
        await client.dispatch(customer(f"c{i}"))
    note = chronik.EventData("note.added", {})
    await client.append(chronik.StreamId("note", "n1"), [note])
    await client.append(chronik.StreamId("note", "n1", "acme"), [chronik.EventData("note.added")])
    stored = await _all(server.app.store.list_streams())
    assert await _all(client.list_streams()) == stored and len(stored) == 7
    assert await _all(client.list_streams(page_size=2)) == stored  # four pages
    assert await _all(client.list_streams(limit=3, page_size=2)) == stored[:3]
    customers = await _all(client.list_streams("customer", prefix="c3"))
    assert [(i.stream.aggregate_id, i.version) for i in customers] == [("c3", 0)]
    acme = await _all(client.list_streams(tenant="acme"))
    assert [str(i.stream) for i in acme] == [str(chronik.StreamId("note", "n1", "acme"))]
    default = await _all(client.list_streams("note", tenant=""))
    assert [i.stream for i in default] == [chronik.StreamId("note", "n1")]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = rpc.EventStoreStub(channel)  # type: ignore[no-untyped-call]
        first = await stub.ListStreams(pb.ListStreamsRequest(limit=5))
        rest = await stub.ListStreams(pb.ListStreamsRequest(limit=5, cursor=first.next_cursor))
        assert len(first.streams) == 5 and len(rest.streams) == 2 and not rest.next_cursor
        for bad, field in (
            (pb.ListStreamsRequest(cursor="x"), "cursor"),
            (pb.ListStreamsRequest(limit=5000), "limit"),
            (pb.ListStreamsRequest(domain="Bad Domain"), "domain"),
            (pb.ListStreamsRequest(prefix="\x00"), "prefix"),
        ):
            err = await _refused(stub.ListStreams(bad))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field in str(err.details())


async def test_describe_is_the_servers_catalog(server: GrpcServer, client: Client) -> None:
    """Client.describe() answers what GET /v1/schemas answers: the same catalog, as JSON."""
    described = await client.describe()
    assert described == catalog_of(server.app).to_json()
    assert "customer" in [d["domain"] for d in described["domains"]]


async def _wait_for_statuses(client: Client, *names: str) -> list[ProjectionStatus]:
    async with asyncio.timeout(10):
        while True:
            statuses = await client.projections()
            if set(names) <= {s.name for s in statuses}:
                return statuses
            await asyncio.sleep(0.02)


async def test_projection_status_and_actions(server: GrpcServer, client: Client) -> None:
    """List and Status show ProjectionAdmin's rows; pause, resume, reset (to the start or a
    position) and rebuild queue requests; bad names and positions are typed errors."""
    await client.dispatch(customer("c1"))
    statuses = await _wait_for_statuses(client, "receipts", "customer_summary")
    assert all(isinstance(s, ProjectionStatus) for s in statuses)
    (summary,) = await client.projection("customer_summary")
    assert summary.name == "customer_summary" and summary.generation >= 1
    for action in (client.pause, client.resume, client.rebuild, client.reset):
        request_id = await action("receipts")
        assert request_id
    head = await client.head()
    assert await client.reset("receipts", head)
    later = chronik.Position(head.commit + 100) if head is not None else None
    with pytest.raises(errors.ValidationError, match="past the head") as bad_to:
        await client.reset("receipts", later)
    assert bad_to.value.field == "to"
    with pytest.raises(errors.UnknownProjection, match="nope"):
        await client.pause("nope")
    with pytest.raises(errors.UnknownProjection):
        await client.projection("nope")
    with pytest.raises(errors.ValidationError) as bad_name:
        await client.rebuild("Not A Name")
    assert bad_name.value.field == "name"


async def test_admin_writes_are_off_without_auth_unless_enabled() -> None:
    """Without auth, the admin calls are PermissionDenied (AdminWritesDisabled) naming
    grpc.admin_writes and change nothing; reads still answer; the config key exists."""
    srv = await served()
    try:
        async with Client(f"127.0.0.1:{srv.port}") as client:
            await client.dispatch(customer("c1"))
            assert await client.projections() == []
            for call in (
                client.pause("receipts"),
                client.resume("receipts"),
                client.reset("receipts"),
                client.rebuild("receipts"),
                client.retry_dead_letters("receipts"),
                client.drop_dead_letters("receipts"),
            ):
                with pytest.raises(errors.AdminWritesDisabled, match=r"grpc\.admin_writes"):
                    await call
    finally:
        await srv.stop(1)
    assert not Config().grpc.admin_writes
    assert msgspec.convert({"grpc": {"admin_writes": True}}, Config).grpc.admin_writes


async def test_with_auth_the_admin_calls_need_the_admin_right() -> None:
    """With auth, a key without the admin right is refused naming the key; one with it may
    act even though admin_writes is off; no credentials is AuthenticationError."""
    auth = Auth(
        [
            ApiKey(name="reader", key="reader-secret"),
            ApiKey(name="ops", key="ops-secret-1", admin=True),
        ]
    )
    app = build_app("memory://")
    srv = GrpcServer(app, port=0, auth=auth, projections=projections(app))
    await srv.start()
    address = f"127.0.0.1:{srv.port}"
    try:
        async with Client(address, api_key="reader-secret") as reader:
            await _wait_for_statuses(reader, "receipts")
            with pytest.raises(errors.PermissionDenied, match="reader") as denied:
                await reader.pause("receipts")
            assert not isinstance(denied.value, errors.AdminWritesDisabled)
        async with Client(address, api_key="ops-secret-1") as ops:
            assert await ops.pause("receipts")
        async with Client(address) as anonymous:
            with pytest.raises(errors.AuthenticationError):
                await anonymous.projections()
            with pytest.raises(errors.AuthenticationError):
                await anonymous.pause("receipts")
    finally:
        await srv.stop(1)


async def test_a_refused_rebuild_is_failed_precondition() -> None:
    """Rebuilding a projection declared replay="refuse" that handled an event is
    FAILED_PRECONDITION with the ReplayRefused message, rebuilt as ReplayRefused."""
    mailer = Projection("mailer", replay="refuse")

    @mailer.on("CustomerCreated")
    def mail(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        pass  # an email leaves the building

    app = build_app("memory://")
    srv = GrpcServer(app, port=0, projections=[mailer], admin_writes=True)
    await srv.start()
    try:
        async with Client(f"127.0.0.1:{srv.port}") as client:
            await client.dispatch(customer("c1"))
            async with asyncio.timeout(10):
                while not any(s.position for s in await client.projections()):
                    await asyncio.sleep(0.02)
            with pytest.raises(errors.ReplayRefused, match="rebuild of mailer refused"):
                await client.rebuild("mailer")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
                stub = rpc.ProjectionsStub(channel)  # type: ignore[no-untyped-call]
                err = await _refused(stub.Rebuild(pb.ProjectionRequest(name="mailer")))
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "rebuild of mailer refused" in str(err.details())
    finally:
        await srv.stop(1)


async def test_dead_letters_listed_retried_and_dropped() -> None:
    """A parked event is listed by DeadLetters, retried (a request id) and dropped by id."""
    fragile = Projection("fragile", policy=ErrorPolicy(retries=0, backoff=0, then="park"))

    @fragile.on("CustomerCreated")
    def handle(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        if event.json()["name"] == "poison":
            raise ValueError("cannot handle poison")

    srv = GrpcServer(build_app("memory://"), port=0, projections=[fragile], admin_writes=True)
    await srv.start()
    try:
        async with Client(f"127.0.0.1:{srv.port}") as client:
            await client.dispatch(customer("p1", "poison"))
            async with asyncio.timeout(10):
                while not (letters := await client.dead_letters("fragile")):
                    await asyncio.sleep(0.02)
            assert letters[0].stream == "customer/p1" and "poison" in (letters[0].error or "")
            assert await client.retry_dead_letters("fragile")
            async with asyncio.timeout(10):  # the retry fails again: parked again
                while not (letters := await client.dead_letters("fragile")):
                    await asyncio.sleep(0.02)
            assert await client.drop_dead_letters("fragile", letters[0].event_id) == 1
            assert await client.dead_letters("fragile") == []
            with pytest.raises(errors.UnknownProjection):
                await client.dead_letters("nope")
    finally:
        await srv.stop(1)


async def test_stopping_with_an_open_subscription_logs_no_stray_task_error() -> None:
    """A subscription the client ended, then the server's stop, leave no task whose end
    asyncio reports as "exception was never retrieved" (the pending read is retrieved)."""
    import gc

    reported: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    try:
        for _ in range(3):
            srv = await served()
            async with Client(f"127.0.0.1:{srv.port}") as client:
                await client.dispatch(customer("c1"))
                async with client.subscribe(domains=["customer"]) as events:
                    async for _event in events:
                        break
            await srv.stop(1)
            gc.collect()
            await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(None)
    assert not [m for m in reported if "never retrieved" in m]
