"""Tenant isolation at the server's edge (tenancy.mode: required): two tenants' keys, a key
without tenant, an operator key (tenant "*") and JWTs with and without the tenant claim, over
every HTTP route and gRPC method the server serves; a route neither checked here nor listed as
not tenant-relevant fails the coverage test, so a new one cannot escape."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from starlette.routing import Route

import chronik
from chronik.messages import StreamId
from chronik.projections import Projection, ReadModel, Table
from chronik.server.admin import create_admin_routes
from chronik.server.auth import ApiKey, Auth
from chronik.server.grpc import GrpcServer
from chronik.server.http import LiveQuery, create_http_app
from chronik.server.http_auth import HttpAuth, JwtConfig
from chronik.server.http_cloudevents import cloudevents_routes
from chronik.server.http_cluster import cluster_routes
from chronik.server.http_retention import retention_routes
from chronik.server.http_server import HttpServer
from chronik.server.tenancy import TenancyConfig
from chronik.transports.cloudevents_receiver import CloudEventsReceiver
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc
from examples.shop.app import build_app
from examples.shop.events import registry
from examples.shop.projections import customer_summary

SECRET = "a-test-secret-of-32-characters!!"
TENANTS = ("acme", "globex")
KEYS = {"acme": "acme-key-0001", "globex": "globex-key-01", "op": "operator-key-1"}
KEYS["none"] = "no-tenant-key-1"
KEY_TENANT = {"acme": "acme", "globex": "globex", "op": "*", "none": None}
#: the tenants each principal must see: exactly these, on every read path
SEES: dict[str, set[str]] = {
    "acme": {"acme"},
    "globex": {"globex"},
    "op": {"acme", "globex"},
    "none": set(),
    "jwt-acme": {"acme"},
    "jwt-none": set(),
}
GRPC_WHO = ("acme", "globex", "op", "none")
SERVED = {"CommandGateway", "EventStore", "Catalog", "Projections", "PersonalData"}
CALLED_BY_CHRONIK = {"BusinessLogic", "Projector", "Saga"}  # served by user code, not chronik

HTTP_EXEMPT = {  # route -> why it carries no tenant's data
    "GET /healthz": "liveness of the node",
    "GET /readyz": "readiness of the node",
    "GET /metrics": "node counters, no events",
    "GET /openapi.json": "the API description",
    "GET /v1/schemas": "the schema catalog (types, not data)",
    "GET /v1/cluster": "cluster membership",
    "GET /admin/login": "the sign-in form",
    "POST /admin/login": "signing in (checked by every other admin route)",
    "POST /admin/logout": "signing out",
    "GET /admin/static/{name}": "static files",
}
GRPC_EXEMPT = {"Catalog.Describe": "the schema catalog (types, not data)"}

#: retention defaults per tenant (``tenant:domain``, ``tenant:*``) and for a domain
RETENTION_DEFAULTS = {
    "customer": chronik.Retention(max_count=10_000),
    **{f"{t}:customer": chronik.Retention(max_count=5_000) for t in TENANTS},
    **{f"{t}:*": chronik.Retention(max_age=86400.0 * 365) for t in TENANTS},
}

TENANT_TABLE = Table(
    "tenant_customers", {"customer_id": str, "name": str}, "customer_id", per_tenant=True
)
tenant_customers = Projection("tenant_customers", tables=[TENANT_TABLE])


@tenant_customers.on("CustomerCreated")
def _row(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    name = registry.decode(event).name
    rm.upsert("tenant_customers", customer_id=event.stream.aggregate_id, name=name)


def token(**claims: Any) -> str:
    now = int(time.time())
    scope = "read append admin commands:customer:*"
    body = {"aud": "chronik", "exp": now + 600, "sub": "t", "scope": scope, **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


def create(aggregate_id: str, tenant: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "domain": "customer",
        "aggregate_id": aggregate_id,
        "type": "CreateCustomer",
        "payload": {"name": f"n-{aggregate_id}", "email": f"{aggregate_id}@x"},
    }
    return body if tenant is None else {**body, "tenant": tenant}


@dataclass
class Edge:
    app: chronik.Chronik
    server: GrpcServer
    http: httpx.AsyncClient
    channel: grpc.aio.Channel
    routes: list[Route]

    def headers(self, who: str) -> dict[str, str]:
        if who == "jwt-acme":
            return {"authorization": f"Bearer {token(tenant='acme')}"}
        if who == "jwt-none":
            return {"authorization": f"Bearer {token()}"}
        return {"x-api-key": KEYS[who]}

    def meta(self, who: str) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", KEYS[who]),)

    @property
    def events(self) -> rpc.EventStoreStub:
        return rpc.EventStoreStub(self.channel)


async def seed(edge: Edge) -> None:
    """Customers, raw events and tagged events in both tenants, and the projections on them."""
    op = edge.headers("op")
    for t in TENANTS:
        r = await edge.http.post("/v1/commands", json=create(f"{t}-c1"), headers=edge.headers(t))
        assert r.status_code == 200 and r.json()["stream"] == f"{t}:customer/{t}-c1", r.text
        for name in ("shared", *(f"victim-{who}" for who in SEES)):
            r = await edge.http.post("/v1/commands", json=create(name, t), headers=op)
            assert r.status_code == 200, r.text
        note = {"type": "note.added", "payload": {"text": t}, "tags": ["note:1"]}
        r = await edge.http.post("/v1/dcb/append", json={"events": [note], "tenant": t}, headers=op)
        assert r.status_code == 200, r.text
    head = await edge.app.store.head()
    assert edge.server.runner is not None and head is not None
    async with asyncio.timeout(10):
        await edge.server.runner.wait_for(head)


def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/t.db"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def edge(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Edge]:
    tenancy = TenancyConfig("required")
    app = build_app(store_url(request, tmp_path))
    keys = [
        ApiKey(n, k, tenant=KEY_TENANT[n], commands={"customer": "*"}, append=True, admin=True)
        for n, k in KEYS.items()
    ]
    auth = Auth(keys, tenancy)
    server = GrpcServer(
        app,
        port=0,
        auth=auth,
        raw_append=True,
        projections=[tenant_customers, customer_summary],
        tenancy=tenancy,
    )
    await server.start()
    http_auth = HttpAuth(auth, JwtConfig(secret=SECRET, audience="chronik"))
    extra = [
        *create_admin_routes(app, runner=server.runner, auth=http_auth),
        *cluster_routes(),
        *retention_routes(RETENTION_DEFAULTS),
        *cloudevents_routes(CloudEventsReceiver({"orders.placed"})),
    ]
    queries = [
        LiveQuery("tenant_customers", "tenant_customers", "tenant_customers", ("name",)),
        LiveQuery("summaries", "customer_summary", "customer_summary", ("name",)),
    ]
    web = create_http_app(
        app, runner=server.runner, queries=queries, auth=http_auth, extra_routes=extra,
        raw_append=True,
    )  # fmt: skip
    http = HttpServer(web, port=0)
    await http.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}", timeout=10) as c:
            found = Edge(app, server, c, channel, [r for r in web.routes if isinstance(r, Route)])
            await seed(found)
            yield found
    finally:
        await channel.close()
        await http.stop()
        await server.stop(1)


async def ok(call: Awaitable[httpx.Response]) -> Any:
    r = await call
    assert r.status_code == 200, r.text
    return r.json()


# --- the checks, per route ---------------------------------------------------------------------

Read = Callable[[Edge, str], Awaitable[set[str]]]
Write = Callable[[Edge, str, str], Awaitable[Any]]
HTTP_READS: dict[str, Read] = {}
HTTP_WRITES: dict[str, Write] = {}
GRPC_READS: dict[str, Read] = {}
GRPC_WRITES: dict[str, Write] = {}


def check(table: dict[str, Any], name: str) -> Callable[[Any], Any]:
    def register(fn: Any) -> Any:
        table[name] = fn
        return fn

    return register


@check(HTTP_READS, "GET /v1/streams")
async def _streams(edge: Edge, who: str) -> set[str]:
    seen: set[str] = set()
    for params in ({}, *({"tenant": t} for t in TENANTS)):
        body = await ok(edge.http.get("/v1/streams", params=params, headers=edge.headers(who)))
        seen |= {s["tenant"] for s in body["streams"]}
    return seen


@check(HTTP_READS, "GET /v1/streams/{domain}/{aggregate_id:path}/events")
async def _stream_events(edge: Edge, who: str) -> set[str]:
    seen: set[str] = set()
    for params in ({}, *({"tenant": t} for t in TENANTS)):
        r = await edge.http.get(
            "/v1/streams/customer/shared/events", params=params, headers=edge.headers(who)
        )
        assert r.status_code in (200, 404), r.text  # another tenant's stream: 404
        seen |= {e["tenant"] for e in r.json().get("events", [])}
    return seen


@check(HTTP_READS, "GET /v1/events")
async def _events(edge: Edge, who: str) -> set[str]:
    seen: set[str] = set()
    for order in ("asc", "desc"):
        params = {"order": order, "limit": "3"}  # pages past the other tenant's events
        body = await ok(edge.http.get("/v1/events", params=params, headers=edge.headers(who)))
        assert len(body["events"]) == (3 if SEES[who] else 0)
        body = await ok(edge.http.get("/v1/events", headers=edge.headers(who)))
        seen |= {e["tenant"] for e in body["events"]}
    return seen


async def sse(edge: Edge, who: str, path: str, seconds: float = 0.7, **headers: str) -> list[Any]:
    """The data of each SSE message within ``seconds`` (or until the stream ends)."""
    found: list[Any] = []
    hdrs = {**edge.headers(who), **headers}
    async with edge.http.stream("GET", path, headers=hdrs) as r:
        assert r.status_code == 200

        async def pump() -> None:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    found.append(json.loads(line[6:]))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pump(), seconds)
    return found


@check(HTTP_READS, "GET /v1/events/stream")
async def _events_sse(edge: Edge, who: str) -> set[str]:
    return {e["tenant"] for e in await sse(edge, who, "/v1/events/stream?from=start")}


@check(HTTP_READS, "GET /v1/queries/{name}")
async def _query(edge: Edge, who: str) -> set[str]:
    body = await ok(edge.http.get("/v1/queries/tenant_customers", headers=edge.headers(who)))
    seen = {row["tenant"] for row in body["rows"]}
    pages = await sse(edge, who, "/v1/queries/tenant_customers", accept="text/event-stream")
    return seen | {row["tenant"] for page in pages for row in page.get("rows", [])}


@check(HTTP_READS, "POST /v1/dcb/read")
async def _dcb_read(edge: Edge, who: str) -> set[str]:
    seen: set[str] = set()
    for backward in (False, True):
        query = {"query": {"items": [{"types": ["note.added"]}]}, "backward": backward}
        body = await ok(edge.http.post("/v1/dcb/read", json=query, headers=edge.headers(who)))
        seen |= {e["tenant"] for e in body["events"]}
    return seen


@check(HTTP_READS, "GET /v1/admin/retention/{domain}/{aggregate_id:path}")
async def _retention(edge: Edge, who: str) -> set[str]:
    seen: set[str] = set()
    for t in TENANTS:
        r = await edge.http.get(
            "/v1/admin/retention/customer/shared", params={"tenant": t}, headers=edge.headers(who)
        )
        assert r.status_code in (200, 404), r.text
        if r.status_code == 200:
            seen.add(StreamId.parse(r.json()["stream"]).tenant)
            # the default the scavenger applies to it: its tenant's for its domain
            assert r.json()["default"]["max_count"] == r.json()["effective"]["max_count"] == 5_000
    return seen


@check(HTTP_READS, "GET /v1/admin/retention-defaults")
async def _retention_defaults(edge: Edge, who: str) -> set[str]:
    body = await ok(edge.http.get("/v1/admin/retention-defaults", headers=edge.headers(who)))
    shown = body["defaults"]
    for key, rules in shown.items():  # the rules the scavenger applies, as configured
        assert chronik.Retention(**rules) == RETENTION_DEFAULTS[key]
    if SEES[who]:  # the domain's default applies to every tenant's streams
        assert "customer" in shown
    return {key.partition(":")[0] for key in shown if ":" in key}


@check(HTTP_WRITES, "POST /v1/commands")
async def _command(edge: Edge, who: str, tenant: str) -> httpx.Response:
    body = create(f"w-{uuid.uuid4().hex[:8]}", tenant)
    return await edge.http.post("/v1/commands", json=body, headers=edge.headers(who))


@check(HTTP_WRITES, "POST /v1/dcb/append")
async def _dcb_append(edge: Edge, who: str, tenant: str) -> httpx.Response:
    note = {"type": "note.added", "payload": {"text": who}, "tags": ["note:1"]}
    body = {"events": [note], "tenant": tenant}
    return await edge.http.post("/v1/dcb/append", json=body, headers=edge.headers(who))


@check(HTTP_WRITES, "POST /v1/admin/streams/delete")
async def _delete(edge: Edge, who: str, tenant: str) -> httpx.Response:
    body = {"domain": "customer", "aggregate_id": f"victim-{who}", "tenant": tenant}
    return await edge.http.post("/v1/admin/streams/delete", json=body, headers=edge.headers(who))


@check(HTTP_WRITES, "POST /v1/admin/streams/compact")
async def _compact(edge: Edge, who: str, tenant: str) -> httpx.Response:
    body = {"domain": "customer", "aggregate_id": "shared", "tenant": tenant, "upto": 0}
    return await edge.http.post("/v1/admin/streams/compact", json=body, headers=edge.headers(who))


@check(HTTP_WRITES, "PUT /v1/admin/retention/{domain}/{aggregate_id:path}")
async def _put_retention(edge: Edge, who: str, tenant: str) -> httpx.Response:
    return await edge.http.put(
        "/v1/admin/retention/customer/shared",
        params={"tenant": tenant},
        json={"max_count": 1000},
        headers=edge.headers(who),
    )


async def _grpc_events(call: Any) -> list[pb.Event]:
    try:
        return [e async for e in call]
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, exc  # another tenant's stream
        return []


@check(GRPC_READS, "EventStore.ReadStream")
async def _g_read_stream(edge: Edge, who: str) -> set[str]:
    seen: set[str] = set()
    for t in ("", *TENANTS):
        request = pb.ReadStreamRequest(domain="customer", aggregate_id="shared", tenant=t)
        seen |= {
            e.tenant
            for e in await _grpc_events(edge.events.ReadStream(request, metadata=edge.meta(who)))
        }
    return seen


@check(GRPC_READS, "EventStore.ReadAll")
async def _g_read_all(edge: Edge, who: str) -> set[str]:
    seen: set[str] = set()
    for backward in (False, True):
        request = pb.ReadAllRequest(backward=backward, limit=3)
        found = await _grpc_events(edge.events.ReadAll(request, metadata=edge.meta(who)))
        assert len(found) == (3 if SEES[who] else 0)
        seen |= {e.tenant for e in found}
    found = await _grpc_events(edge.events.ReadAll(pb.ReadAllRequest(), metadata=edge.meta(who)))
    return seen | {e.tenant for e in found}


@check(GRPC_READS, "EventStore.ReadQuery")
async def _g_read_query(edge: Edge, who: str) -> set[str]:
    query = pb.Query(items=[pb.QueryItem(types=["note.added"])])
    call = edge.events.ReadQuery(pb.ReadQueryRequest(query=query), metadata=edge.meta(who))
    return {e.tenant for e in await _grpc_events(call)}


@check(GRPC_READS, "EventStore.ListStreams")
async def _g_list_streams(edge: Edge, who: str) -> set[str]:
    seen: set[str] = set()
    for request in (pb.ListStreamsRequest(), *(pb.ListStreamsRequest(tenant=t) for t in TENANTS)):
        found = await edge.events.ListStreams(request, metadata=edge.meta(who))
        seen |= {s.tenant for s in found.streams}
    return seen


@check(GRPC_READS, "EventStore.Subscribe")
async def _g_subscribe(edge: Edge, who: str) -> set[str]:
    seen: set[str] = set()
    call = edge.events.Subscribe(pb.SubscribeRequest(), metadata=edge.meta(who))
    async with asyncio.timeout(5):
        async for item in call:
            if item.WhichOneof("item") == "caught_up":
                break
            seen.add(item.event.tenant)
    call.cancel()
    return seen


@check(GRPC_WRITES, "CommandGateway.Handle")
async def _g_handle(edge: Edge, who: str, tenant: str) -> Any:
    payload = json.dumps({"name": "g", "email": "g@x"}).encode()
    request = pb.CommandRequest(
        domain="customer", aggregate_id=f"g-{uuid.uuid4().hex[:8]}", type="CreateCustomer",
        payload=payload, tenant=tenant,
    )  # fmt: skip
    return await edge.channel.unary_unary(
        "/chronik.v1.CommandGateway/Handle",
        request_serializer=pb.CommandRequest.SerializeToString,
        response_deserializer=pb.CommandResponse.FromString,
    )(request, metadata=edge.meta(who))


@check(GRPC_WRITES, "EventStore.Append")
async def _g_append(edge: Edge, who: str, tenant: str) -> Any:
    event = pb.NewEvent(type="note.added", payload=b'{"text": "raw"}')
    request = pb.AppendRequest(
        domain="note", aggregate_id=uuid.uuid4().hex, tenant=tenant, events=[event]
    )
    return await edge.events.Append(request, metadata=edge.meta(who))


@check(GRPC_WRITES, "EventStore.AppendTagged")
async def _g_append_tagged(edge: Edge, who: str, tenant: str) -> Any:
    event = pb.NewEvent(type="note.added", payload=b'{"text": "tagged"}', tags=["note:1"])
    request = pb.AppendTaggedRequest(events=[event], tenant=tenant)
    return await edge.events.AppendTagged(request, metadata=edge.meta(who))


def _operator_only_http(edge: Edge) -> set[str]:
    """Every other route: the admin UI, projections, personal data, scavenging, CloudEvents."""
    return http_routes(edge) - set(HTTP_READS) - set(HTTP_WRITES) - set(HTTP_EXEMPT)


GRPC_OPERATOR = {"Projections", "PersonalData"}  # every method of these services


def http_routes(edge: Edge) -> set[str]:
    return {f"{m} {r.path}" for r in edge.routes for m in (r.methods or {"GET"}) - {"HEAD"}}


def grpc_methods() -> set[str]:
    return {
        f"{name}.{m.name}" for name in SERVED for m in pb.DESCRIPTOR.services_by_name[name].methods
    }


# --- the tests ---------------------------------------------------------------------------------


async def test_every_route_and_method_is_checked_or_exempt(edge: Edge) -> None:
    """Every HTTP route and every gRPC method of the served services is checked here (read,
    write, or operator-only) or listed as not tenant-relevant; no listed name is stale."""
    routes = http_routes(edge)
    listed = {*HTTP_READS, *HTTP_WRITES, *HTTP_EXEMPT}
    assert listed - routes == set(), "stale route names"
    operator = _operator_only_http(edge)
    assert all(r.split(" ", 1)[1].startswith(("/admin", "/v1/")) for r in operator), operator
    assert set(pb.DESCRIPTOR.services_by_name) == SERVED | CALLED_BY_CHRONIK
    methods = grpc_methods()
    checked = {*GRPC_READS, *GRPC_WRITES, *GRPC_EXEMPT}
    checked |= {m for m in methods if m.split(".")[0] in GRPC_OPERATOR}
    assert methods == checked


async def test_http_reads_see_exactly_their_tenant(edge: Edge) -> None:
    """On every HTTP read path each principal finds its tenant's data and none of the other's:
    tenant keys and JWTs their own, the operator both, a credential without tenant nothing."""
    wrong: dict[tuple[str, str], set[str]] = {}
    for route, read in HTTP_READS.items():  # each route's principals at once: the SSE reads
        found = await asyncio.gather(*(read(edge, who) for who in SEES))  # wait out windows
        for who, seen in zip(SEES, found, strict=True):
            if seen != SEES[who]:
                wrong[(route, who)] = seen
    assert wrong == {}


async def test_grpc_reads_see_exactly_their_tenant(edge: Edge) -> None:
    """On every gRPC read method each key finds its tenant's events and none of the other's."""
    wrong = {
        (method, who): seen
        for method, read in GRPC_READS.items()
        for who in GRPC_WHO
        if (seen := await read(edge, who)) != SEES[who]
    }
    assert wrong == {}


async def tenant_state(edge: Edge, tenant: str) -> tuple[Any, ...]:
    """What a write could change in one tenant: its events, streams and a retention rule
    (once no committed event is held back behind a running transaction: PostgreSQL)."""
    store = edge.app.store
    for _ in range(200):
        if await store.settled(await store.head()):
            break
        await asyncio.sleep(0.02)
    events = [e.event_id async for e in store.read_all() if e.stream.tenant == tenant]
    streams = [
        (i.stream, i.version) async for i in store.list_streams() if i.stream.tenant == tenant
    ]
    rules = await store.get_retention(StreamId("customer", "shared", tenant))
    return events, streams, rules


async def test_http_writes_stay_in_their_tenant(edge: Edge) -> None:
    """Every HTTP write into another tenant (or by a credential without tenant) is 403 naming
    ``tenant`` and changes nothing there; into its own tenant it goes through."""
    for route, write in HTTP_WRITES.items():
        for who in SEES:
            for tenant in TENANTS:
                before = await tenant_state(edge, tenant)
                r = await write(edge, who, tenant)
                if tenant in SEES[who]:
                    assert r.status_code < 500 and r.status_code != 403, (route, who, r.text)
                    if route in ("POST /v1/commands", "POST /v1/dcb/append"):
                        assert r.status_code == 200, r.text
                else:
                    assert r.status_code == 403, (route, who, tenant, r.text)
                    assert r.json().get("field") == "tenant", r.text
                    assert await tenant_state(edge, tenant) == before, (route, who, tenant)


async def test_commands_without_tenant_get_the_credentials(edge: Edge) -> None:
    """A command without tenant goes to the key's (or token's) tenant over HTTP and gRPC; a
    credential without tenant may not send one at all."""
    for who, tenant in (("acme", "acme"), ("jwt-acme", "acme"), ("globex", "globex")):
        body = create(f"own-{who}")
        r = await edge.http.post("/v1/commands", json=body, headers=edge.headers(who))
        assert r.json()["stream"] == f"{tenant}:customer/own-{who}", r.text
    for who in ("none", "jwt-none"):
        r = await edge.http.post("/v1/commands", json=create("x"), headers=edge.headers(who))
        assert r.status_code == 403 and r.json()["field"] == "tenant", r.text
    answer = await _g_handle(edge, "globex", "")
    assert {e.tenant for e in answer.events} == {"globex"}
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _g_handle(edge, "none", "")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_grpc_writes_stay_in_their_tenant(edge: Edge) -> None:
    """Every gRPC write into another tenant (or by a key without tenant) is PERMISSION_DENIED
    and changes nothing there; into its own tenant it goes through."""
    for method, write in GRPC_WRITES.items():
        for who in GRPC_WHO:
            for tenant in TENANTS:
                before = await tenant_state(edge, tenant)
                if tenant in SEES[who]:
                    await write(edge, who, tenant)
                    continue
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await write(edge, who, tenant)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, (method, who)
                assert "tenant" in (refused.value.details() or "")
                assert await tenant_state(edge, tenant) == before, (method, who, tenant)


SAMPLE = {
    "{name}": "tenant_customers",
    "{action}": "pause",
    "{event_id}": "0190a0e0-0000-7000-8000-000000000000",
    "{topic}": "orders.placed",
    "{domain}": "customer",
    "{aggregate_id:path}": "shared",
}


async def test_operator_only_routes_refuse_tenant_scoped_credentials(edge: Edge) -> None:
    """The admin UI, projections, personal data, scavenging and the CloudEvents receiver are
    refused (403) to tenant keys, tenant JWTs and credentials without tenant; the operator key
    gets past the tenant check."""
    routes = sorted(_operator_only_http(edge))
    assert len(routes) > 20  # the admin UI's pages and buttons among them
    origin = str(edge.http.base_url).rstrip("/")
    for route in routes:
        method, path = route.split(" ", 1)
        for placeholder, value in SAMPLE.items():
            path = path.replace(placeholder, value)
        for who in SEES:
            headers = {**edge.headers(who), "origin": origin}
            async with edge.http.stream(method, path, headers=headers) as r:  # /admin/live
                status = r.status_code  # streams: the status is enough
                text = (await r.aread()).decode() if status == 403 else ""
            if who == "op":
                assert status != 403, (route, text[:300])
                continue
            assert status == 403, (route, who, status)
            assert "tenant" in text, (route, who)
            if path.startswith("/v1/"):
                assert json.loads(text)["field"] == "tenant"
    r = await edge.http.get("/v1/queries/summaries", headers=edge.headers("acme"))
    assert r.status_code == 403 and "not tenant-scoped" in r.json()["detail"]
    assert (await ok(edge.http.get("/v1/queries/summaries", headers=edge.headers("op"))))["rows"]


async def test_operator_only_grpc_methods(edge: Edge) -> None:
    """Every Projections and PersonalData method is PERMISSION_DENIED to a tenant key and to a
    key without tenant; the operator key gets past the tenant check."""
    for service in sorted(GRPC_OPERATOR):
        for m in pb.DESCRIPTOR.services_by_name[service].methods:
            request_type = getattr(pb, m.input_type.name)
            response_type = getattr(pb, m.output_type.name)
            call = edge.channel.unary_unary(
                f"/chronik.v1.{service}/{m.name}",
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )
            for who in GRPC_WHO:
                try:
                    await call(request_type(), metadata=edge.meta(who))
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                denied = code == grpc.StatusCode.PERMISSION_DENIED
                assert denied == (who != "op"), (service, m.name, who, code)


async def test_a_malformed_tenant_claim_is_refused(edge: Edge) -> None:
    """A JWT whose tenant claim is not a tenant name is an invalid token (401)."""
    for bad in ("UPPER", "", 7, "a" * 70):
        headers = {"authorization": f"Bearer {token(tenant=bad)}"}
        r = await edge.http.get("/v1/events", headers=headers)
        assert r.status_code == 401, (bad, r.text)


async def test_append_conditions_do_not_see_other_tenants(edge: Edge) -> None:
    """A tenant's DCB append condition is not failed by another tenant's matching events (a
    409 would reveal that they exist), over HTTP and gRPC."""
    secret = {"type": "note.added", "payload": {"text": "s"}, "tags": ["secret:1"]}
    body = {"events": [secret], "tenant": "globex"}
    await ok(edge.http.post("/v1/dcb/append", json=body, headers=edge.headers("op")))
    query = {"items": [{"tags": ["secret:1"]}]}
    mine = {**secret, "payload": {"text": "mine"}, "tags": ["mine:1"]}
    body = {"events": [mine], "condition": {"fail_if_events_match": query}}
    await ok(edge.http.post("/v1/dcb/append", json=body, headers=edge.headers("acme")))
    condition = pb.AppendCondition(query=pb.Query(items=[pb.QueryItem(tags=["secret:1"])]))
    event = pb.NewEvent(type="note.added", payload=b'{"text": "g"}', tags=["mine:2"])
    request = pb.AppendTaggedRequest(events=[event], condition=condition)
    await edge.events.AppendTagged(request, metadata=edge.meta("acme"))
    body = {**body, "tenant": "globex"}  # in globex the condition does fail
    r = await edge.http.post("/v1/dcb/append", json=body, headers=edge.headers("op"))
    assert r.status_code == 409, r.text
