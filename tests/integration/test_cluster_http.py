"""GET /v1/cluster over a real HTTP server: the read right with auth on, the node's own view
(node id, epoch, digest) with a Membership, a one-off store read without one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from chronik import Chronik
from chronik.cluster import Membership
from chronik.server.auth import ApiKey, Auth
from chronik.server.http import create_http_app
from chronik.server.http_auth import HttpAuth
from chronik.server.http_cluster import cluster_routes
from chronik.server.http_server import HttpServer

READER = {"x-api-key": "reader-key-1"}
BLIND = {"x-api-key": "blind-key-1"}


@pytest.fixture
async def app() -> AsyncIterator[Chronik]:
    async with Chronik("memory://") as a:
        yield a


async def _client(
    app: Chronik, membership: Membership | None
) -> tuple[HttpServer, httpx.AsyncClient]:
    auth = HttpAuth(
        Auth(
            [
                ApiKey(name="reader", key="reader-key-1"),
                ApiKey(name="blind", key="blind-key-1", read=False, commands={"x": "*"}),
            ]
        )
    )
    http = create_http_app(app, auth=auth, extra_routes=cluster_routes(membership))
    server = HttpServer(http, port=0)
    await server.start()
    return server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10)


async def test_the_cluster_endpoint_needs_the_read_right_and_shows_the_nodes_view(
    app: Chronik,
) -> None:
    """Without credentials 401, without the read right 403; a reader gets this node's view:
    its id, epoch >= 1, the digest, and both members with their addresses."""
    async with Membership(app.store, node_id="me", grpc="127.0.0.1:1", http="127.0.0.1:2") as me:
        other = Membership(app.store, node_id="other", grpc="127.0.0.1:3")
        await other.join()
        server, c = await _client(app, me)
        try:
            assert (await c.get("/v1/cluster")).status_code == 401
            assert (await c.get("/v1/cluster", headers=BLIND)).status_code == 403
            r = await c.get("/v1/cluster", headers=READER)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["node_id"] == "me" and body["live"] == 2 and body["epoch"] >= 1
            assert body["digest"] == (await me.view()).digest
            got = {m["node_id"]: (m["grpc"], m["http"], m["state"]) for m in body["members"]}
            assert got == {
                "me": ("127.0.0.1:1", "127.0.0.1:2", "alive"),
                "other": ("127.0.0.1:3", "", "alive"),
            }
        finally:
            await c.aclose()
            await server.stop()


async def test_without_a_membership_the_endpoint_reads_the_store(app: Chronik) -> None:
    """A node that is no member itself still lists the store's members (epoch 0, no node id)."""
    joined = Membership(app.store, node_id="elsewhere")
    await joined.join()
    server, c = await _client(app, None)
    try:
        body = (await c.get("/v1/cluster", headers=READER)).json()
        assert body["node_id"] is None and body["epoch"] == 0
        assert [m["node_id"] for m in body["members"]] == ["elsewhere"]
    finally:
        await c.aclose()
        await server.stop()
