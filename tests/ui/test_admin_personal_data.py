"""The admin UI's Personal data page and the event view's Redact button, in Debian's chromium:
forget a subject (confirmed; a dismissed confirmation sends nothing), see it listed, redact an
event (reason from the prompt), both audited with the signed-in principal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chronik.server.auth import ApiKey, Auth
from chronik.server.http_auth import HttpAuth
from chronik.testing.services import require_services
from tests.ui.conftest import ServerThread, command

if not require_services():  # with CHRONIK_REQUIRE_SERVICES=1 a missing playwright fails
    pytest.importorskip("playwright")
from playwright.sync_api import expect

ADMIN = "gdpr-admin-key-77"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    """The shop on a fresh SQLite store behind one admin API key, with one customer."""
    auth = HttpAuth(Auth([ApiKey("dpo", ADMIN, admin=True, commands={"customer": "*"})]))
    s = ServerThread(f"sqlite:///{tmp_path}/events.db", auth=auth).start()
    with httpx.Client(base_url=s.url, timeout=15, headers={"x-api-key": ADMIN}) as http:
        command(http, "customer", "c-ui", "CreateCustomer", name="Una", email="una@shop.test")
    yield s
    s.stop()


def _sign_in(page: Any, url: str, path: str) -> None:
    """Open ``path`` through the sign-in form with the admin key."""
    page.goto(f"{url}{path}")
    page.fill("input[name=credential]", ADMIN)
    page.click("form.login button")
    expect(page.locator("h1")).not_to_have_text("Sign in")


def _audits(server: ServerThread, type_: str) -> list[dict[str, Any]]:
    """The payloads of the audit events of ``type_``."""
    assert server.app is not None
    store = server.app.store

    async def read() -> list[dict[str, Any]]:
        return [e.json() async for e in store.read_all(types=[type_])]

    result: list[dict[str, Any]] = server.run(read())
    return result


def test_forget_a_subject_with_confirmation(page: Any, server: ServerThread) -> None:
    """A dismissed confirmation forgets nothing; a confirmed one forgets, lists the subject
    and audits the signed-in key with the reason."""
    _sign_in(page, server.url, "/admin/personal-data")
    expect(page.locator("h1")).to_have_text("Personal data")
    expect(page.locator("#forgotten-empty")).to_be_visible()
    page.fill("#forget-subject", "c-ui")
    page.fill("#forget-reason", "REQ-UI-1")
    asked: list[str] = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click("#forget-button")
    expect(page.locator("#forgotten-empty")).to_be_visible()
    assert asked and "for good" in asked[0]
    assert _audits(server, "chronik.subject_forgotten") == []

    page.once("dialog", lambda d: d.accept())
    page.click("#forget-button")
    expect(page.locator("#personal-data .flash")).to_contain_text("forgot c-ui")
    expect(page.locator('#forgotten tr[data-subject="c-ui"]')).to_be_visible()
    page.shot("forgotten")
    (audit,) = _audits(server, "chronik.subject_forgotten")
    assert audit["by"] == "key:dpo" and audit["reason"] == "REQ-UI-1"


def test_redact_an_event_from_the_stream_view(page: Any, server: ServerThread) -> None:
    """Redact asks why, replaces the event's payload by the marker (shown after a reload with
    a badge), audits who and why with a hash; the redacted event has no button any more."""
    _sign_in(page, server.url, "/admin/streams/customer/c-ui")
    event = page.locator("article.event").first
    expect(event.locator("pre.payload")).to_contain_text("una@shop.test")
    page.once("dialog", lambda d: d.accept("entered by mistake"))
    event.locator("button.redact").click()
    expect(page.locator("article.redacted .flash")).to_contain_text("redacted by key:dpo")
    page.reload()
    event = page.locator("article.event").first
    expect(event.locator(".badge")).to_have_text("redacted")
    expect(event.locator("pre.payload")).to_contain_text("$redacted")
    expect(event.locator("pre.payload")).not_to_contain_text("una@shop.test")
    expect(event.locator("button.redact")).to_have_count(0)
    page.shot("redacted")
    (audit,) = _audits(server, "chronik.event_redacted")
    assert audit["by"] == "key:dpo" and audit["reason"] == "entered by mistake"
    assert len(audit["payload_sha256"]) == 64
