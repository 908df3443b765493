"""The HTTP endpoints of deletes, retention and the scavenger, in process over ASGI: reads
need the read right, writes the admin right (or admin writes enabled without auth)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import chronik
from chronik.lifecycle.scavenger import LEASE
from chronik.server.http import create_http_app
from chronik.server.http_retention import retention_routes

M1 = chronik.StreamId("metrics", "m1")


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[chronik.Chronik]:
    """A SQLite app with a stream of five events and one of another domain after it."""
    app = chronik.Chronik(f"sqlite:///{tmp_path}/api.db")
    await app.store.open()
    await app.store.append(M1, [chronik.EventData("tick", {"i": i}) for i in range(5)])
    await app.store.append(chronik.StreamId("audit", "a1"), [chronik.EventData("seen")])
    yield app
    await app.store.close()


def _client(app: chronik.Chronik, admin_writes: bool) -> httpx.AsyncClient:
    http = create_http_app(
        app,
        admin_writes=admin_writes,
        extra_routes=retention_routes({"metrics": chronik.Retention(max_count=3)}),
    )
    transport = httpx.ASGITransport(app=http)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


async def test_writes_are_refused_without_admin_writes(app: chronik.Chronik) -> None:
    """Without auth and admin writes: reads answer, every write is 403 and changes nothing."""
    async with _client(app, admin_writes=False) as http:
        rules = await http.get("/v1/admin/retention/metrics/m1")
        assert rules.status_code == 200 and rules.json()["max_count"] is None
        for method, path, body in [
            ("PUT", "/v1/admin/retention/metrics/m1", {"max_count": 1}),
            ("POST", "/v1/admin/scavenge", {}),
            ("POST", "/v1/admin/streams/delete", {"domain": "metrics", "aggregate_id": "m1"}),
        ]:
            refused = await http.request(method, path, json=body)
            assert refused.status_code == 403, (path, refused.text)
        assert (await http.get("/v1/admin/scavenger")).json() == {"running": False}
    assert await app.store.stream_version(M1) == 4


async def test_rules_scavenge_and_deletes_over_http(app: chronik.Chronik) -> None:
    """PUT rules, a dry run then a run (the domain default applies), a soft and a hard delete;
    a tombstoned stream then reads as 404, bad input is 400 naming the field, a held lease
    409."""
    async with _client(app, admin_writes=True) as http:
        put = await http.put("/v1/admin/retention/audit/a1", json={"max_age": "30d"})
        assert put.status_code == 200 and put.json()["max_age"] == 30 * 86400.0
        bad = await http.put("/v1/admin/retention/audit/a1", json={"max_count": 0})
        assert bad.status_code == 400 and "max_count" in bad.text
        dry = await http.post("/v1/admin/scavenge", json={"dry_run": True})
        assert dry.status_code == 200 and (dry.json()["events"], dry.json()["dry_run"]) == (2, True)
        done = await http.post("/v1/admin/scavenge", json={})
        assert done.json()["events"] == 2 and done.json()["removed"] == [["metrics/m1", 2, 14]]
        events = await http.get("/v1/streams/metrics/m1/events")
        assert [e["sequence"] for e in events.json()["events"]] == [2, 3, 4]
        soft = await http.post(
            "/v1/admin/streams/delete",
            json={"domain": "metrics", "aggregate_id": "m1", "expected": 4},
        )
        assert soft.status_code == 200 and soft.json()["sequence"] == 5
        assert (await http.get("/v1/streams/metrics/m1/events")).json()["events"] == []
        wrong = await http.post(
            "/v1/admin/streams/delete",
            json={"domain": "audit", "aggregate_id": "a1", "expected": "later"},
        )
        assert wrong.status_code == 400 and "expected" in wrong.text
        hard = await http.post(
            "/v1/admin/streams/delete",
            json={"domain": "audit", "aggregate_id": "a1", "hard": True},
        )
        assert hard.status_code == 200
        gone = await http.get("/v1/streams/audit/a1/events")
        assert gone.status_code == 404 and "StreamDeleted" in gone.text
        await app.store.acquire_lease(LEASE, "another-node", 60.0)
        held = await http.post("/v1/admin/scavenge", json={})
        assert held.status_code == 409


async def test_admin_retention_page_and_buttons(app: chronik.Chronik) -> None:
    """The admin UI's Retention page shows the buttons only with admin writes; a dry run
    answers the report fragment and removes nothing, a run removes; a cross-site POST is
    refused."""
    from chronik.server.admin import create_admin_routes
    from chronik.server.retention import RetentionConfig, RetentionRule

    await app.store.set_retention(M1, chronik.Retention(max_count=2))
    section = RetentionConfig(domains={"audit": RetentionRule(max_count=5)})
    scavenger = section.scavenger_for(app)
    running = asyncio.create_task(scavenger.run_forever())
    async with asyncio.timeout(5):
        while scavenger.runs == 0:  # its first run (max_count 2: events 0..2 go)
            await asyncio.sleep(0.01)
    try:
        for writes in (False, True):
            http = create_http_app(app, admin_writes=writes, extra_routes=create_admin_routes(app))
            transport = httpx.ASGITransport(app=http)
            async with httpx.AsyncClient(transport=transport, base_url="http://a.test") as ui:
                page = await ui.get("/admin/retention")
                assert page.status_code == 200 and "Retention" in page.text
                assert ("Scavenge now" in page.text) is writes
                assert "audit" in page.text  # the running scavenger's domain defaults
        own = {"origin": "http://a.test"}
        async with httpx.AsyncClient(transport=transport, base_url="http://a.test") as ui:
            foreign = await ui.post("/admin/retention/scavenge", headers={"origin": "http://x"})
            assert foreign.status_code == 403
            await scavenger.stop()  # its lease goes: the buttons run now
            running.cancel()
            await app.store.set_retention(M1, chronik.Retention(max_count=1))
            dry = await ui.post("/admin/retention/dry-run", headers=own)
            assert dry.status_code == 200 and "would remove 1 events" in dry.text
            assert [e.sequence async for e in app.store.read_stream(M1)] == [3, 4]
            done = await ui.post("/admin/retention/scavenge", headers=own)
            assert done.status_code == 200 and "Removed" in done.text, done.text
    finally:
        running.cancel()
    assert [e.sequence async for e in app.store.read_stream(M1)] == [4]
