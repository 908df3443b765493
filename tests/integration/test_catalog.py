"""The schema catalog of the example shop over HTTP (GET /v1/schemas), in /openapi.json (the
command union, live-query parameters) and over gRPC (Catalog.Describe); remote domains listed
without a schema."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import jsonschema_rs
import msgspec
import pytest

import chronik
from chronik.server.auth import ApiKey, Auth
from chronik.server.catalog import catalog_of
from chronik.server.grpc import GrpcServer
from chronik.server.http import LiveQuery, create_http_app
from chronik.server.http_auth import HttpAuth
from chronik.server.http_server import HttpServer
from chronik.server.remote import RemoteModel
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc
from examples.shop.app import build_app

SHOP_COMMANDS = {
    "customer": ["AddLoyaltyPoints", "CreateCustomer"],
    "transaction": ["CompleteTransaction", "CreateTransaction"],
}
SHOP_EVENTS = {
    "CustomerCreated",
    "LoyaltyPointsAdded",
    "TransactionCreated",
    "TransactionCompleted",
}
SHOP_DOMAIN_EVENTS = {
    "customer": ["CustomerCreated", "LoyaltyPointsAdded"],
    "transaction": ["TransactionCompleted", "TransactionCreated"],
}
KEYS = Auth([ApiKey("reader", "reader-key-1"), ApiKey("blind", "blind-key-1", read=False)])
ITEM = {"sku": "book", "price_cents": 1500, "qty": 2}


async def serve(app: chronik.Chronik, auth: HttpAuth | None = None) -> HttpServer:
    queries = [LiveQuery("customer", "customer_summary", "customer_summary", ("customer_id",))]
    server = HttpServer(create_http_app(app, queries=queries, auth=auth), port=0)
    await server.start()
    return server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = build_app("memory://")
    await app.open()
    server = await serve(app)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as c:
        yield c
    await server.stop()
    await app.close()


def valid(schema: dict[str, Any], value: Any) -> bool:
    return bool(jsonschema_rs.Draft202012Validator(schema).is_valid(value))


async def test_schemas_route_lists_commands_and_events(http: httpx.AsyncClient) -> None:
    """GET /v1/schemas gives each shop domain's command types with payload schemas that accept
    good payloads and refuse bad ones, and every registered event type with its version."""
    r = await http.get("/v1/schemas")
    assert r.status_code == 200, r.text
    body = r.json()
    domains = {d["domain"]: d for d in body["domains"]}
    assert {n: [c["type"] for c in d["commands"]] for n, d in domains.items()} == SHOP_COMMANDS
    assert all(d["logic"] == "in-process" and not d["open"] for d in domains.values())
    schemas = {c["type"]: c["schema"] for d in domains.values() for c in d["commands"]}
    assert valid(schemas["CreateCustomer"], {"name": "Ada", "email": "a@x"})
    assert not valid(schemas["CreateCustomer"], {"name": "Ada"})
    assert valid(schemas["CreateTransaction"], {"customer_id": "c1", "items": [ITEM]})
    assert not valid(schemas["CreateTransaction"], {"customer_id": "c1", "items": [{"qty": 0}]})
    events = {e["type"]: e for e in body["events"]}
    assert set(events) >= SHOP_EVENTS
    created = events["CustomerCreated"]
    assert created["schema_version"] == 1 and created["aliases"] == []
    assert valid(created["schema"], {"name": "Ada", "email": "a@x"})
    assert not valid(created["schema"], {"name": 1, "email": "a@x"})


async def test_openapi_documents_the_command_union_and_queries(http: httpx.AsyncClient) -> None:
    """/openapi.json: the body of POST /v1/commands is a oneOf over the shop's command types,
    discriminated by type, that accepts the commands the server accepts and refuses others;
    each live query has a path with its parameters; /v1/schemas is documented."""
    doc = (await http.get("/openapi.json")).json()
    content = doc["paths"]["/v1/commands"]["post"]["requestBody"]["content"]
    union = content["application/json"]["schema"]
    assert len(union["oneOf"]) == 4
    assert set(union["discriminator"]["mapping"]) == {
        t for ts in SHOP_COMMANDS.values() for t in ts
    }
    root = {**union, "components": doc["components"]}
    good = [
        {"domain": "customer", "aggregate_id": "c1", "type": "CreateCustomer",
         "payload": {"name": "Ada", "email": "a@x"}},
        {"domain": "transaction", "aggregate_id": "t1", "type": "CompleteTransaction"},
        {"domain": "transaction", "aggregate_id": "t1", "type": "CreateTransaction",
         "payload": {"customer_id": "c1", "items": [ITEM]}, "command_id": "k1"},
    ]  # fmt: skip
    bad = [
        {"domain": "customer", "aggregate_id": "c1", "type": "CreateCustomer"},
        {"domain": "customer", "aggregate_id": "c1", "type": "CreateTransaction",
         "payload": {"customer_id": "c1", "items": []}},
        {"domain": "nowhere", "aggregate_id": "c1", "type": "CreateCustomer",
         "payload": {"name": "Ada", "email": "a@x"}},
        {"domain": "customer", "aggregate_id": "c1", "type": "AddLoyaltyPoints",
         "payload": {"points": 0}},
    ]  # fmt: skip
    for body in good:
        assert valid(root, body), body
        assert (await http.post("/v1/commands", json=body)).status_code != 400, body
    for body in bad:
        assert not valid(root, body), body
        assert (await http.post("/v1/commands", json=body)).status_code in (400, 404), body
    query = doc["paths"]["/v1/queries/customer"]["get"]
    assert [p["name"] for p in query["parameters"]] == [
        "customer_id",
        *(f"customer_id.{op}" for op in ("gt", "gte", "lt", "lte", "in")),
        "limit",
        "order",
        "cursor",
    ]
    assert "/v1/schemas" in doc["paths"] and "Catalog" in doc["components"]["schemas"]


async def test_remote_domains_are_listed_without_schema() -> None:
    """A domain served by remote business logic is listed as open with an empty command list
    and a note, over HTTP and in OpenAPI (a variant for it; no discriminator then)."""
    app = build_app("memory://")
    app.add_model(RemoteModel("pricing", "127.0.0.1:9"))
    await app.open()
    server = await serve(app)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            domains = {d["domain"]: d for d in (await c.get("/v1/schemas")).json()["domains"]}
            doc = (await c.get("/openapi.json")).json()
    finally:
        await server.stop()
        await app.close()
    pricing = domains["pricing"]
    assert pricing["logic"] == "remote" and pricing["open"] and pricing["commands"] == []
    assert "no local schema" in pricing["note"]
    union = doc["paths"]["/v1/commands"]["post"]["requestBody"]["content"]["application/json"]
    assert "discriminator" not in union["schema"]
    root = {**union["schema"], "components": doc["components"]}
    assert valid(root, {"domain": "pricing", "aggregate_id": "p1", "type": "Quote"})


def test_unsupported_classes_and_aliases() -> None:
    """A payload class msgspec cannot describe gets an any-object schema saying why (no error);
    an event type's former names are listed as aliases."""

    class Opaque(msgspec.Struct):
        value: object

    class Renamed(msgspec.Struct):
        n: int

    registry = chronik.EventRegistry()
    registry.register(Renamed, "renamed", version=2, aliases=["old.name"])
    app = chronik.Chronik("memory://", registry=registry)
    app.add_decider("odd", lambda c, s: None, lambda s, e: s, commands={"Poke": Opaque})
    catalog = catalog_of(app)
    (odd,) = catalog.domains
    (poke,) = odd.commands
    assert poke.schema["type"] == "object" and "Opaque" in poke.schema["description"]
    renamed = next(e for e in catalog.events if e.type == "renamed")
    assert renamed.aliases == ("old.name",) and renamed.schema_version == 2


async def test_schemas_need_the_read_right() -> None:
    """With auth, GET /v1/schemas needs credentials with the read right."""
    app = build_app("memory://")
    await app.open()
    server = await serve(app, HttpAuth(KEYS, None))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            assert (await c.get("/v1/schemas")).status_code == 401
            denied = await c.get("/v1/schemas", headers={"x-api-key": "blind-key-1"})
            assert denied.status_code == 403
            ok = await c.get("/v1/schemas", headers={"x-api-key": "reader-key-1"})
            assert ok.status_code == 200
    finally:
        await server.stop()
        await app.close()


async def test_grpc_catalog_describe() -> None:
    """Catalog.Describe lists the shop's domains, command types and event types, each with its
    JSON Schema as a string; with auth it needs the read right."""
    server = GrpcServer(build_app("memory://"), port=0, auth=KEYS)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = rpc.CatalogStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.Describe(pb.DescribeRequest(), metadata=(("x-api-key", "blind-key-1"),))
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            reply = await stub.Describe(
                pb.DescribeRequest(), metadata=(("x-api-key", "reader-key-1"),)
            )
    finally:
        await server.stop(1)
    commands = {d.domain: [c.type for c in d.commands] for d in reply.domains}
    assert commands == SHOP_COMMANDS
    assert all(d.logic == "in-process" and not d.open for d in reply.domains)
    schema = {c.type: json.loads(c.json_schema) for d in reply.domains for c in d.commands}
    assert valid(schema["CreateCustomer"], {"name": "Ada", "email": "a@x"})
    assert not valid(schema["CreateCustomer"], {"email": "a@x"})
    events = {e.type: e for e in reply.events}
    assert set(events) >= SHOP_EVENTS and events["TransactionCompleted"].schema_version == 1
    assert {d.domain: list(d.events) for d in reply.domains} == SHOP_DOMAIN_EVENTS
    completed = events["TransactionCompleted"]
    assert list(completed.domains) == ["transaction"]
    (v1,) = completed.versions
    assert v1.version == 1 and v1.current and v1.readable and not v1.HasField("upcaster")
    assert valid(json.loads(events["TransactionCompleted"].json_schema), {
        "customer_id": "c1", "amount_cents": 3000,
    })  # fmt: skip


async def test_schemas_list_events_per_domain(http: httpx.AsyncClient) -> None:
    """GET /v1/schemas lists the event types each shop domain emits (a decider and an
    aggregate) and, per event type, the domains emitting it and its versions."""
    body = (await http.get("/v1/schemas")).json()
    assert {d["domain"]: d["events"] for d in body["domains"]} == SHOP_DOMAIN_EVENTS
    events = {e["type"]: e for e in body["events"]}
    assert events["LoyaltyPointsAdded"]["domains"] == ["customer"]
    assert events["TransactionCreated"]["domains"] == ["transaction"]
    assert events["TransactionCreated"]["versions"] == [
        {"version": 1, "current": True, "upcaster": None, "readable": True}
    ]


class Opened(msgspec.Struct):
    """An account was opened (registered at v3)."""

    owner: str


class Closed(msgspec.Struct):
    """An account was closed (registered at v2, v1 has no upcaster)."""


class Noted(msgspec.Struct):
    """A note, emitted by the aggregate below."""

    text: str


class Notebook(chronik.Aggregate):
    """An aggregate: its command method emits Noted, its apply method reads it."""

    domain = "notebook"
    count: int = 0

    @chronik.command("Note")
    def note(self, cmd: dict[str, Any]) -> None:
        self.emit(Noted(cmd["text"]))

    @chronik.apply
    def _noted(self, event: Noted) -> None:
        self.count += 1


def _to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "owner": payload.get("owner", "")}


def test_versions_upcasters_and_emitted_types() -> None:
    """Every version of an event type is listed with the upcaster reading it, a gap in the
    chain marks the versions before it unreadable; a decider's events are found from its
    annotations and the raw EventData type names it uses, an aggregate's from its methods,
    and a remote domain lists none."""
    registry = chronik.EventRegistry()
    registry.register(Opened, "account.opened", version=3)
    registry.register(Closed, "account.closed", version=2)
    registry.register(Noted, "note.added")
    registry.register(msgspec.defstruct("Unused", [("x", int)]), "unused")
    registry.add_upcaster("account.opened", 1, _to_v2)
    registry.add_upcaster("account.opened", 2, lambda p: p)

    def decide(command: chronik.Command, state: dict[str, Any]) -> list[Opened]:
        return [Opened(command.aggregate_id)]

    def evolve(state: dict[str, Any], event: object) -> dict[str, Any]:
        return state

    def close(command: chronik.Command, state: dict[str, Any]) -> chronik.EventData:
        return chronik.EventData("account.closed", {})

    app = chronik.Chronik("memory://", registry=registry)
    app.add_decider("account", decide, evolve)
    app.add_decider("closing", close, evolve)
    app.add_aggregate(Notebook)
    app.add_model(RemoteModel("pricing", "127.0.0.1:9"))
    body = catalog_of(app).to_json()
    emits = {d["domain"]: d["events"] for d in body["domains"]}
    assert emits == {
        "account": ["account.opened"],
        "closing": ["account.closed"],
        "notebook": ["note.added"],
        "pricing": [],
    }
    events = {e["type"]: e for e in body["events"]}
    assert events["unused"]["domains"] == [] and events["note.added"]["domains"] == ["notebook"]
    assert events["account.opened"]["versions"] == [
        {"version": 1, "current": False, "upcaster": f"{__name__}._to_v2", "readable": True},
        {
            "version": 2,
            "current": False,
            "upcaster": f"{__name__}.test_versions_upcasters_and_emitted_types.<locals>.<lambda>",
            "readable": True,
        },
        {"version": 3, "current": True, "upcaster": None, "readable": True},
    ]
    assert events["account.closed"]["versions"] == [
        {"version": 1, "current": False, "upcaster": None, "readable": False},
        {"version": 2, "current": True, "upcaster": None, "readable": True},
    ]
