"""The personal-data API: forget (admin right, audited with the principal), verify and the
forgotten list (read right), redact an event (admin right); refusals are problem+json."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest

import chronik
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.personal import FORGOTTEN, KeyRing
from chronik.server.auth import ApiKey, Auth
from chronik.server.http import create_http_app
from chronik.server.http_auth import HttpAuth

EMAIL = "canary-http-72c1@example.test"
ADMIN = {"x-api-key": "ops-secret-1"}
READER = {"x-api-key": "reader-secret-1"}


class Registered(msgspec.Struct):
    """A registration with a personal email."""

    customer_id: str
    email: str


async def _register(app: chronik.Chronik, cid: str) -> chronik.RecordedEvent:
    """Append one sealed registration of ``cid`` and return it as stored."""
    event = Registered(cid, EMAIL)
    await app.registry.load_keys([event])
    stream = chronik.StreamId("customer", cid)
    await app.store.append(stream, [app.registry.to_event_data(event)])
    (stored,) = [e async for e in app.store.read_stream(stream)]
    return stored


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[chronik.Chronik]:
    """A SQLite app whose registry seals Registered.email under the store's keys."""
    registry = chronik.EventRegistry()
    registry.register(Registered, "customer.registered", personal={"email": "customer_id"})
    app = chronik.Chronik(f"sqlite:///{tmp_path}/api.db", registry=registry)
    await app.store.open()
    registry.use_keys(KeyRing(StoreKeyStore(app.store)))
    yield app
    await app.store.close()


def _client(http: object) -> httpx.AsyncClient:
    """An httpx client calling the ASGI app in process."""
    transport = httpx.ASGITransport(app=http)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


async def test_forget_verify_and_list_with_auth(app: chronik.Chronik) -> None:
    """With API keys: the reader may verify and list but not forget (403); the admin forgets,
    the audit event names it, the cached key is gone at once; verify is then clean."""
    auth = HttpAuth(
        Auth(
            [
                ApiKey(name="ops", key="ops-secret-1", admin=True),
                ApiKey(name="reader", key="reader-secret-1"),
            ]
        )
    )
    stored = await _register(app, "c-1")
    async with _client(create_http_app(app, auth=auth)) as http:
        body = {"subject": "c-1", "canaries": [EMAIL]}
        live = await http.post("/v1/admin/gdpr/verify", json=body, headers=READER)
        assert live.status_code == 200 and live.json()["clean"] is False
        assert "envelope(s) of the subject still open" in live.json()["hits"][0]["what"]

        refused = await http.post("/v1/admin/gdpr/forget", json={"subject": "c-1"}, headers=READER)
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        anonymous = await http.post("/v1/admin/gdpr/forget", json={"subject": "c-1"})
        assert anonymous.status_code == 401

        done = await http.post(
            "/v1/admin/gdpr/forget", json={"subject": "c-1", "reason": "REQ-9"}, headers=ADMIN
        )
        assert done.status_code == 200, done.text
        assert done.json()["key_deleted"] is True and done.json()["by"] == "key:ops"
        assert app.registry.decode(stored).email == FORGOTTEN  # the app's own ring dropped it

        clean = await http.post("/v1/admin/gdpr/verify", json=body, headers=READER)
        assert clean.json()["clean"] is True and clean.json()["envelopes"] == 1
        listed = await http.get("/v1/admin/gdpr/forgotten", headers=READER)
        assert [s["subject"] for s in listed.json()] == ["c-1"]
        bad = await http.post("/v1/admin/gdpr/verify", json={"subject": "c-1", "canaries": ["x"]})
        assert bad.status_code == 401
        short = await http.post(
            "/v1/admin/gdpr/verify", json={"subject": "c-1", "canaries": ["x"]}, headers=READER
        )
        assert short.status_code == 400 and "canar" in short.text
    audit = [e async for e in app.store.read_all(types=["chronik.subject_forgotten"])]
    assert [(e.json()["by"], e.json()["reason"]) for e in audit] == [("key:ops", "REQ-9")]


async def test_writes_need_admin_writes_without_auth(app: chronik.Chronik) -> None:
    """Without auth: forget and redact are refused (403 AdminWritesDisabled) unless admin
    writes are enabled; then the audit names the caller's address."""
    stored = await _register(app, "c-2")
    async with _client(create_http_app(app)) as http:
        off = await http.post("/v1/admin/gdpr/forget", json={"subject": "c-2"})
        assert off.status_code == 403 and "AdminWritesDisabled" in off.text
        off = await http.post(f"/v1/events/{stored.event_id}/redact", json={"reason": "x"})
        assert off.status_code == 403
    async with _client(create_http_app(app, admin_writes=True)) as http:
        done = await http.post("/v1/admin/gdpr/forget", json={"subject": "c-2"})
        assert done.status_code == 200 and done.json()["by"] == "http:127.0.0.1"
        bad = await http.post("/v1/admin/gdpr/forget", json={"subject": "c\x01"})
        assert bad.status_code == 400
        extra = await http.post("/v1/admin/gdpr/forget", json={"subject": "c", "who": "me"})
        assert extra.status_code == 400


async def test_redact_over_http(app: chronik.Chronik) -> None:
    """POST /v1/events/{id}/redact rewrites the event, audits it and compacts the SQLite file;
    an unknown event is 404, a missing reason 400."""
    stored = await _register(app, "c-3")
    async with _client(create_http_app(app, admin_writes=True)) as http:
        url = f"/v1/events/{stored.event_id}/redact"
        missing = await http.post(url, json={})
        assert missing.status_code == 400
        done = await http.post(url, json={"reason": "posted by mistake"})
        assert done.status_code == 200, done.text
        assert done.json()["rewritten"] is True and done.json()["compacted"] is True
        gone = await http.post("/v1/events/nope/redact", json={"reason": "x"})
        assert gone.status_code == 404
        page = await http.get("/v1/streams/customer/c-3/events")
        (shown,) = page.json()["events"]
        assert shown["content_type"] == chronik.messages.REDACTED
        assert shown["payload"]["$redacted"]["reason"] == "posted by mistake"


async def test_openapi_lists_the_endpoints(app: chronik.Chronik) -> None:
    """The OpenAPI document has the four paths (schemathesis fuzzes them)."""
    async with _client(create_http_app(app)) as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
    for path in (
        "/v1/admin/gdpr/forget",
        "/v1/admin/gdpr/verify",
        "/v1/admin/gdpr/forgotten",
        "/v1/events/{event_id}/redact",
    ):
        assert path in paths
