"""DCB over the wire: gRPC ReadQuery / AppendTagged, HTTP POST /v1/dcb/read and /v1/dcb/append,
and the SDK client, on real servers in-process (one memory store behind both), plus tags on
every event the wire carries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

import chronik
from chronik import AppendCondition, EventData, Position, Query, QueryItem, StreamId
from chronik.sdk import Client
from chronik.server.auth import ApiKey, Auth
from chronik.server.grpc import GrpcServer
from chronik.server.http import create_http_app
from chronik.server.http_auth import HttpAuth
from chronik.server.http_server import HttpServer
from chronik.server.openapi import openapi_document
from chronik.server.wire import ERROR_DATA_KEY, ERROR_KEY, query_to_wire
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc
from examples.shop.app import build_app

COURSE = Query([QueryItem(["StudentSubscribed"], ["student:s1"]), QueryItem([], ["course:c1"])])


@dataclass
class Served:
    app: chronik.Chronik
    grpc: rpc.EventStoreStub
    http: httpx.AsyncClient
    client: Client
    seeded: list[chronik.RecordedEvent]


async def _seed(store: Any) -> None:
    """Tagged events (course c1, c2) and a tagged stream event, in one log."""
    await store.append_tagged([EventData("CourseDefined", {"cap": 2}, tags=["course:c1"])])
    await store.append_tagged(
        [
            EventData("StudentSubscribed", {"n": 1}, tags=["course:c1", "student:s1"]),
            EventData("StudentSubscribed", {"n": 2}, tags=["student:s1", "course:c2"]),
            EventData("StudentSubscribed", {"n": 3}, tags=["student:s2", "course:c2"]),
        ]
    )
    await store.append(
        StreamId("note", "n1"), [EventData("note.added", {"n": 4}, tags=["course:c1"])]
    )


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    app = build_app("memory://")
    grpc_server = GrpcServer(app, port=0, raw_append=True)
    await grpc_server.start()
    http_server = HttpServer(create_http_app(app, raw_append=True), port=0)
    await http_server.start()
    await _seed(app.store)
    seeded = [e async for e in app.store.read_all()]
    address = f"127.0.0.1:{grpc_server.port}"
    try:
        async with (
            grpc.aio.insecure_channel(address) as channel,
            Client(address) as client,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_server.port}", timeout=10) as h,
        ):
            yield Served(app, rpc.EventStoreStub(channel), h, client, seeded)
    finally:
        await http_server.stop()
        await grpc_server.stop(1)


def _trailers(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    return {k: str(v) for k, v in exc.trailing_metadata() or ()}


async def test_read_query_over_grpc_http_and_sdk_returns_what_the_store_returns(
    served: Served,
) -> None:
    """ReadQuery, POST /v1/dcb/read and Client.read_query give the store's own read_query
    result (events, order, tags), forward, backward, after a position and with a limit."""
    store = served.app.store
    first = served.seeded[0].position
    for after, limit, backward in [(None, None, False), (first, None, False), (None, 2, True)]:
        want = [e async for e in store.read_query(COURSE, after, limit, backward)]
        assert want and all(COURSE.matches(e) for e in want)
        sdk = [e async for e in served.client.read_query(COURSE, after, limit, backward)]
        assert sdk == want
        request = pb.ReadQueryRequest(
            query=query_to_wire(COURSE),
            after="" if after is None else str(after),
            limit=limit or 0,
            backward=backward,
        )
        wired = [e async for e in served.grpc.ReadQuery(request)]
        assert [(e.event_id, list(e.tags)) for e in wired] == [
            (e.event_id, list(e.tags)) for e in want
        ]
        body = {"query": COURSE.to_dict(), "after": after and str(after), "backward": backward}
        if limit:
            body["limit"] = limit
        r = await served.http.post("/v1/dcb/read", json=body)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "events": [e.to_dict() for e in want],
            "last_position": str(want[-1].position),
        }
    found = [e.json() for e in await _all(served.client.read_query(COURSE))]
    assert found == [{"cap": 2}, {"n": 1}, {"n": 2}, {"n": 4}]


async def _all(events: AsyncIterator[chronik.RecordedEvent]) -> list[chronik.RecordedEvent]:
    return [e async for e in events]


async def test_failed_conditions_are_aborted_with_item_and_position_and_store_nothing(
    served: Served,
) -> None:
    """An append whose condition matches an event after its position fails over gRPC
    (ABORTED, AppendConditionFailed with item and position in the trailers), HTTP (409 with
    item and position) and the SDK (AppendConditionFailed rebuilt); nothing is stored."""
    store = served.app.store
    head = await store.head()
    after = served.seeded[0].position  # course c1 defined; s1 subscribed to c1 after it
    match = served.seeded[1]
    condition = AppendCondition(COURSE, after)
    event = EventData("StudentSubscribed", {"n": 9}, tags=["course:c1", "student:s3"])

    with pytest.raises(chronik.AppendConditionFailed) as info:
        await served.client.append_tagged([event], condition)
    assert (info.value.item, info.value.position) == (0, match.position)
    assert isinstance(info.value.position, Position)

    request = pb.AppendTaggedRequest(
        events=[pb.NewEvent(type="StudentSubscribed", payload=b"{}", tags=["course:c1"])],
        condition=pb.AppendCondition(query=query_to_wire(COURSE), after=str(after)),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await served.grpc.AppendTagged(request)
    assert raw.value.code() == grpc.StatusCode.ABORTED
    trailers = _trailers(raw.value)
    assert trailers[ERROR_KEY] == "AppendConditionFailed"
    data = json.loads(trailers[ERROR_DATA_KEY])
    assert data["item"] == 0 and data["position"] == {"$position": str(match.position)}

    body = {
        "events": [{"type": "StudentSubscribed", "payload": {}, "tags": ["course:c1"]}],
        "condition": {"fail_if_events_match": COURSE.to_dict(), "after": str(after)},
    }
    r = await served.http.post("/v1/dcb/append", json=body)
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["title"] == "AppendConditionFailed"
    assert (problem["item"], problem["position"]) == (0, str(match.position))
    assert r.headers["content-type"].startswith("application/problem+json")

    assert await store.head() == head
    assert await store.get_event(event.event_id) is None


async def test_appends_that_pass_store_tagged_events_and_retries_answer_the_same(
    served: Served,
) -> None:
    """A passing conditional append over each way stores the tagged events in their own
    streams; sending the same events again answers the original positions, storing nothing."""
    store = served.app.store
    head = await store.head()
    condition = AppendCondition(COURSE, head)
    events = [
        EventData("StudentSubscribed", {"n": 10}, tags=["course:c1", "student:s4"]),
        EventData("StudentSubscribed", {"n": 11}, tags=["course:c1", "student:s5"]),
    ]
    result = await served.client.append_tagged(events, condition)
    assert len(result.positions) == 2 and result.position == result.positions[-1]
    assert result.stream == StreamId("dcb", events[0].event_id)
    again = await served.client.append_tagged(events, condition)
    assert again.positions == result.positions
    stored = await store.get_event(events[1].event_id)
    assert stored is not None and stored.tags == ("course:c1", "student:s5")
    assert stored.stream == StreamId("dcb", events[1].event_id)

    head = await store.head()
    body = {
        "events": [
            {"type": "seat.claimed", "payload": {"n": 12}, "tags": ["seat:7"], "event_id": "e-12"}
        ],
        "condition": {"fail_if_events_match": {"items": [{"tags": ["seat:7"]}]}, "after": None},
        "domain": "seats",
    }
    r = await served.http.post("/v1/dcb/append", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["position"] == r.json()["positions"][0] != str(head)
    retried = await served.http.post("/v1/dcb/append", json=body)
    assert retried.status_code == 200 and retried.json() == r.json()
    claimed = await store.get_event("e-12")
    assert claimed is not None and claimed.stream == StreamId("seats", "e-12")

    request = pb.AppendTaggedRequest(
        events=[pb.NewEvent(type="seat.claimed", payload=b"{}", tags=["seat:8"], event_id="e-13")]
    )
    reply = await served.grpc.AppendTagged(request)
    assert reply.positions == [reply.position]
    assert (await served.grpc.AppendTagged(request)).position == reply.position
    assert len([e async for e in store.read_query(Query.of(tags=["seat:8"]))]) == 1


async def test_raw_tagged_appends_are_off_by_default_and_need_the_append_right() -> None:
    """Without raw_append, AppendTagged is PERMISSION_DENIED and POST /v1/dcb/append 403
    naming the key that enables it; with auth, a key without the append right is refused
    and one with it may append; reads stay open to the read right."""
    app = build_app("memory://")
    off = GrpcServer(app, port=0)
    await off.start()
    http = HttpServer(create_http_app(app), port=0)
    await http.start()
    event = pb.NewEvent(type="seat.claimed", payload=b"{}", tags=["seat:1"])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{off.port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await rpc.EventStoreStub(ch).AppendTagged(pb.AppendTaggedRequest(events=[event]))
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "grpc.raw_append" in (info.value.details() or "")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as h:
            body = {"events": [{"type": "seat.claimed", "payload": {}, "tags": ["seat:1"]}]}
            r = await h.post("/v1/dcb/append", json=body)
            assert r.status_code == 403 and "http.raw_append" in r.json()["detail"]
            read = await h.post("/v1/dcb/read", json={"query": {"items": [{}]}})
            assert read.status_code == 200 and read.json()["events"] == []
        assert await app.store.head() is None
    finally:
        await http.stop()
        await off.stop(1)

    keys = Auth(
        [
            ApiKey(name="reader", key="reader-secret"),
            ApiKey(name="writer", key="writer-secret", append=True),
        ]
    )
    app = build_app("memory://")
    on = GrpcServer(app, port=0, auth=keys, raw_append=True)
    await on.start()
    http = HttpServer(create_http_app(app, auth=HttpAuth(keys), raw_append=True), port=0)
    await http.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{on.port}") as ch:
            stub = rpc.EventStoreStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.AppendTagged(
                    pb.AppendTaggedRequest(events=[event]),
                    metadata=(("x-api-key", "reader-secret"),),
                )
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            await stub.AppendTagged(
                pb.AppendTaggedRequest(events=[event]), metadata=(("x-api-key", "writer-secret"),)
            )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as h:
            body = {"events": [{"type": "seat.claimed", "payload": {}, "tags": ["seat:2"]}]}
            denied = await h.post(
                "/v1/dcb/append", json=body, headers={"x-api-key": "reader-secret"}
            )
            assert denied.status_code == 403
            assert (await h.post("/v1/dcb/append", json=body)).status_code == 401
            ok = await h.post("/v1/dcb/append", json=body, headers={"x-api-key": "writer-secret"})
            assert ok.status_code == 200, ok.text
            read = await h.post(
                "/v1/dcb/read",
                json={"query": {"items": [{"tags": ["seat:2"]}]}},
                headers={"x-api-key": "reader-secret"},
            )
            assert [e["tags"] for e in read.json()["events"]] == [["seat:2"]]
    finally:
        await http.stop()
        await on.stop(1)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/dcb/read", {"query": {"items": []}}, "query.items"),
        ("/v1/dcb/read", {"query": {"items": [{"tags": ["two words"]}]}}, "query.items[0].tags"),
        ("/v1/dcb/read", {"query": {"items": [{"types": ["9bad"]}]}}, "query.items[0].types"),
        ("/v1/dcb/read", {"query": {"items": [{"kinds": []}]}}, "query.items[0]"),
        ("/v1/dcb/read", {"query": {"items": [{}]}, "after": "soon"}, "after"),
        ("/v1/dcb/read", {"query": {"items": [{}]}, "limit": 0}, "limit"),
        ("/v1/dcb/read", {"items": [{}]}, "body"),
        ("/v1/dcb/append", {"events": []}, "events"),
        (
            "/v1/dcb/append",
            {"events": [{"type": "t", "payload": {}, "tags": [""]}]},
            "events[0].tags",
        ),
        (
            "/v1/dcb/append",
            {
                "events": [{"type": "t", "payload": {}}],
                "condition": {"fail_if_events_match": {"items": [{}]}, "after": "x"},
            },
            "condition.after",
        ),
        (
            "/v1/dcb/append",
            {
                "events": [{"type": "t", "payload": {}}],
                "condition": {"fail_if_events_match": {"items": [{"tags": [1]}]}},
            },
            "condition.fail_if_events_match.items[0].tags[0]",
        ),
        (
            "/v1/dcb/append",
            {"events": [{"type": "CustomerCreated", "payload": {"name": 5}}]},
            "events[0].payload",
        ),
    ],
)
async def test_bad_http_input_is_refused_naming_the_field(
    served: Served, path: str, body: dict[str, Any], field: str
) -> None:
    """A malformed query, position, limit, tag, condition or payload is a 400/422 problem
    whose field names the input; nothing is stored."""
    head = await served.app.store.head()
    r = await served.http.post(path, json=body)
    assert r.status_code in (400, 422), r.text
    assert r.json()["field"] == field, r.json()
    assert await served.app.store.head() == head


async def test_bad_grpc_input_is_invalid_argument_naming_the_field(served: Served) -> None:
    """Over gRPC and the SDK, a bad query or condition position is INVALID_ARGUMENT /
    ValidationError naming the field, and a registered type's payload is schema-checked."""
    bad = pb.Query(items=[pb.QueryItem(tags=["no spaces please"])])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [e async for e in served.grpc.ReadQuery(pb.ReadQueryRequest(query=bad))]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "query.items[0].tags" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [e async for e in served.grpc.ReadQuery(pb.ReadQueryRequest())]
    assert "query.items" in (info.value.details() or "")
    request = pb.AppendTaggedRequest(
        events=[pb.NewEvent(type="t", payload=b"{}")],
        condition=pb.AppendCondition(query=query_to_wire(COURSE), after="-1"),
    )
    with pytest.raises(chronik.ValidationError) as err:
        await served.client.append_tagged([EventData("CustomerCreated", {"name": 5}, tags=["x:1"])])
    assert err.value.field == "events[0].payload"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await served.grpc.AppendTagged(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "condition.after" in (info.value.details() or "")


async def test_tags_travel_on_read_all_read_stream_and_stream_appends(served: Served) -> None:
    """Tags come back on ReadAll and ReadStream (gRPC and SDK) and on GET /v1/events, and
    EventStore.Append stores the tags of its NewEvents."""
    await served.grpc.Append(
        pb.AppendRequest(
            domain="note",
            aggregate_id="n2",
            events=[pb.NewEvent(type="note.added", payload=b"{}", tags=["b:2", "a:1", "a:1"])],
        )
    )
    stream = [e async for e in served.client.read_stream(StreamId("note", "n2"))]
    assert [e.tags for e in stream] == [("a:1", "b:2")]
    raw = [
        e
        async for e in served.grpc.ReadStream(
            pb.ReadStreamRequest(domain="note", aggregate_id="n2")
        )
    ]
    assert [list(e.tags) for e in raw] == [["a:1", "b:2"]]
    everything = [e async for e in served.client.read_all()]
    assert everything == [e async for e in served.app.store.read_all()]
    assert [e.tags for e in everything[:2]] == [("course:c1",), ("course:c1", "student:s1")]
    wired = [e async for e in served.grpc.ReadAll(pb.ReadAllRequest(limit=2))]
    assert [list(e.tags) for e in wired] == [["course:c1"], ["course:c1", "student:s1"]]
    r = await served.http.get("/v1/events", params={"limit": "2"})
    assert [e["tags"] for e in r.json()["events"]] == [["course:c1"], ["course:c1", "student:s1"]]


def test_openapi_documents_both_dcb_routes() -> None:
    """/openapi.json describes POST /v1/dcb/read and /v1/dcb/append with their bodies, the
    409 of a failed condition, and tags on events."""
    doc = openapi_document()
    read, append = doc["paths"]["/v1/dcb/read"]["post"], doc["paths"]["/v1/dcb/append"]["post"]
    ref = "#/components/schemas/{}"
    schema = read["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": ref.format("DcbRead")}
    assert "409" in append["responses"] and "409" not in read["responses"]
    components = doc["components"]["schemas"]
    assert {"Query", "QueryItem", "TaggedEvent", "AppendCondition", "DcbAppend"} <= set(components)
    assert "tags" in components["Event"]["properties"]
    assert {"item", "position"} <= set(components["Problem"]["properties"])


async def test_sdk_subscription_follows_a_query(served: Served) -> None:
    """Client.subscribe(query=...) delivers the stored matches, then a live one, nothing else;
    a bad query is refused naming the field."""
    want = [e.event_id for e in served.seeded if COURSE.matches(e)]
    got: list[str] = []
    async with served.client.subscribe(query=COURSE) as sub:
        async for event in sub:
            got.append(event.event_id)
            if len(got) == len(want):
                await served.app.store.append_tagged([EventData("x", {}, tags=["course:c9"])])
                live = await served.app.store.append_tagged(
                    [EventData("y", {}, tags=["course:c1"])]
                )
            if len(got) == len(want) + 1:
                break
    assert got[:-1] == want
    assert (await served.app.store.get_event(got[-1])).position == live.position  # type: ignore[union-attr]
    request = pb.SubscribeRequest(query=pb.Query(items=[pb.QueryItem(tags=["bad tag"])]))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in served.grpc.Subscribe(request):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "query.items[0].tags" in (err.value.details() or "")
