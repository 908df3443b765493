"""The admin UI in Debian's chromium: search and open streams, follow correlation chains, pause,
resume and rebuild projections, retry and drop dead letters, watch the overview live, sign in.

Every wait is on a selector or a condition (Playwright's `expect`), never a fixed sleep;
screenshots land in tests/ui/artifacts/.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from chronik.app import Chronik
from chronik.messages import RecordedEvent
from chronik.outbox import OUTBOX, record
from chronik.projections import ErrorPolicy, Projection, ReadModel, Table
from chronik.sagas import Saga, SagaContext
from chronik.server.auth import ApiKey, Auth
from chronik.server.http_auth import HttpAuth
from chronik.store.base import TableWrite
from chronik.testing.services import require_services
from chronik.transports.message import Message
from examples.shop.events import registry
from tests.ui.conftest import ServerThread, command

if not require_services():  # with CHRONIK_REQUIRE_SERVICES=1 a missing playwright fails
    pytest.importorskip("playwright")
from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parents[2]
ITEMS = [{"sku": "book", "price_cents": 1500, "qty": 2}]
READER, ADMIN = "reader-key-123", "admin-key-456"


class Controls:
    """Switches the tests flip in the test projections that run inside the server."""

    def __init__(self) -> None:
        self.hold_at = 0  # the audit handler's call number that waits for `gate` (0: never)
        self.calls = 0
        self.gate = threading.Event()
        self.healed = threading.Event()  # the fragile projection stops failing on "Poison"


class Reminder(msgspec.Struct):
    """The state of a `reminders` saga instance."""

    sent: int = 0


def ui_projections(ctl: Controls, app: Chronik) -> list[Projection]:
    """`audit` (a table, one event per batch, can be held mid-rebuild), `fragile` (fails on
    customers named Poison*, parks at once) and the `reminders` saga (a deadline an hour after
    each customer named Remind*)."""
    audit = Projection(
        "audit",
        tables=[Table("audit", {"event_id": str, "type": str}, primary_key="event_id")],
        batch_size=1,
    )

    @audit.on("CustomerCreated", "TransactionCompleted", "LoyaltyPointsAdded")
    async def _audit(event: RecordedEvent, rm: ReadModel) -> None:
        ctl.calls += 1
        if ctl.hold_at and ctl.calls >= ctl.hold_at:
            while not ctl.gate.is_set():
                await asyncio.sleep(0.01)
        rm.upsert("audit", event_id=event.event_id, type=event.type)

    fragile = Projection("fragile", policy=ErrorPolicy(retries=0, backoff=0.0, then="park"))

    @fragile.on("CustomerCreated")
    def _fragile(event: RecordedEvent, rm: ReadModel) -> None:
        if registry.decode(event).name.startswith("Poison") and not ctl.healed.is_set():
            raise RuntimeError("poisoned customer")

    reminders: Saga[Reminder] = Saga(
        "reminders",
        state=Reminder,
        associate=lambda e: e.stream.aggregate_id if b'"Remind' in e.payload else None,
    )

    @reminders.starts_with("CustomerCreated")
    def _remind(state: Reminder, event: RecordedEvent, ctx: SagaContext) -> Reminder:
        ctx.schedule("follow-up", 3600, {"customer": event.stream.aggregate_id})
        return state

    return [audit, fragile, reminders.projection(app.dispatch)]


def seed(http: httpx.Client) -> None:
    """Three customers; c-1 completes a transaction (the loyalty saga adds points)."""
    for cid, name in (("c-1", "Ada"), ("c-2", "Bo"), ("c-3", "Cy")):
        command(http, "customer", cid, "CreateCustomer", name=name, email=f"{cid}@shop.test")
    command(http, "transaction", "t-1", "CreateTransaction", customer_id="c-1", items=ITEMS)
    command(http, "transaction", "t-1", "CompleteTransaction")


@pytest.fixture
def ctl() -> Iterator[Controls]:
    """Fresh switches; the gate is opened at teardown so no handler waits forever."""
    c = Controls()
    yield c
    c.gate.set()


@pytest.fixture
def server(ctl: Controls, tmp_path: Path) -> Iterator[ServerThread]:
    """The shop plus the test projections on a fresh SQLite store, seeded."""
    store = f"sqlite:///{tmp_path}/events.db"
    s = ServerThread(store, lambda app: ui_projections(ctl, app)).start()
    with httpx.Client(base_url=s.url, timeout=15) as http:
        seed(http)
    yield s
    s.stop()


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    """An HTTP API client of the server."""
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


def row(page: Any, name: str) -> Any:
    """The projections table row of one projection."""
    return page.locator(f'#projections tr[data-projection="{name}"]')


def test_search_a_stream_open_it_and_follow_its_correlation_chain(
    page: Any, server: ServerThread
) -> None:
    """Search by domain and prefix, open the stream, see payload, metadata and the chain."""
    page.goto(f"{server.url}/admin/streams")
    page.select_option("#domain", "customer")
    page.fill("#prefix", "c-1")
    page.click("#search button[type=submit]")
    link = page.locator("#results a.stream-link", has_text="customer/c-1")
    expect(link).to_have_count(1)
    expect(page.locator("#results a.stream-link", has_text="customer/c-2")).to_have_count(0)
    page.shot("search")
    link.click()
    expect(page.locator("h1")).to_contain_text("customer/c-1")
    created = page.locator('article.event[data-sequence="0"]')
    expect(created.locator(".type")).to_have_text("CustomerCreated")
    expect(created.locator("pre.payload")).to_contain_text('"name": "Ada"')
    expect(created.locator("pre.metadata")).to_contain_text('"correlation_id"')
    points = page.locator('article.event[data-sequence="1"]')
    expect(points.locator(".type")).to_have_text("LoyaltyPointsAdded")
    points.locator("button.chain-button").click()
    chain = points.locator(".chain-list li")
    expect(chain).to_have_count(2)
    expect(chain.nth(0)).to_contain_text("TransactionCompleted")
    expect(chain.nth(1)).to_contain_text("LoyaltyPointsAdded")
    expect(chain.nth(1)).to_have_class(re.compile(r"depth-1.*current"))
    expect(chain.nth(1).locator(".cause")).to_contain_text("of loyalty, from event")
    page.shot("stream-chain")
    chain.nth(0).locator("a").click()
    expect(page.locator("h1")).to_contain_text("transaction/t-1")
    expect(page.locator("article.event .type").first).to_have_text("TransactionCompleted")


def test_pause_and_resume_a_projection(page: Any, server: ServerThread, http: httpx.Client) -> None:
    """Pause: the state turns paused and lag grows with new events; resume: it catches up."""
    page.goto(f"{server.url}/admin/projections")
    receipts = row(page, "receipts")
    expect(receipts.locator(".state")).to_have_text("running")
    receipts.locator("button.pause").click()
    expect(receipts.locator(".state")).to_have_text("paused")
    command(http, "customer", "c-9", "CreateCustomer", wait=False, name="Di", email="d@x")
    expect(receipts.locator("td.lag")).not_to_contain_text(re.compile(r"^\s*0 events"))
    page.shot("paused")
    receipts.locator("button.resume").click()
    expect(receipts.locator(".state")).to_have_text("running")
    expect(receipts.locator("td.lag")).to_contain_text(re.compile(r"^\s*0 events"))


def test_rebuild_shows_progress_then_the_new_generation(
    page: Any, server: ServerThread, ctl: Controls
) -> None:
    """A rebuild held mid-way shows its progress bar; released, generation 2 takes over."""
    page.goto(f"{server.url}/admin/projections")
    audit = row(page, "audit")
    expect(audit.locator(".generation")).to_have_text("1")
    ctl.calls, ctl.hold_at = 0, 3  # the rebuild's third event waits for the gate
    audit.locator("button.rebuild-button").click()
    expect(audit.locator(".rebuild progress")).to_be_visible()
    expect(audit.locator(".progress-text")).to_contain_text(re.compile(r"\d+% \(\d+ / \d+\)"))
    page.shot("rebuilding")
    ctl.gate.set()
    expect(audit.locator(".generation")).to_have_text("2")
    expect(audit.locator(".rebuild")).to_have_count(0)
    expect(audit.locator(".state")).to_have_text("running")


def test_dead_letters_inspect_retry_and_drop(
    page: Any, server: ServerThread, http: httpx.Client, ctl: Controls
) -> None:
    """A poison event is parked; inspected, retried once fixed, and another one dropped."""
    command(http, "customer", "p-1", "CreateCustomer", name="Poison One", email="p1@x")
    page.goto(f"{server.url}/admin/projections")
    expect(row(page, "fragile").locator("a.warn")).to_have_text("1")
    row(page, "fragile").locator("a.warn").click()
    letter = page.locator("article.letter")
    expect(letter).to_have_count(1)
    expect(letter.locator("header")).to_contain_text("customer/p-1")
    expect(letter.locator("pre.error")).to_contain_text("poisoned customer")
    letter.locator("summary").click()
    expect(letter.locator("pre.payload")).to_contain_text('"name": "Poison One"')
    page.shot("dead-letter")
    ctl.healed.set()
    letter.locator("button.retry").click()
    expect(page.locator("#no-dead-letters")).to_be_visible()
    ctl.healed.clear()
    command(http, "customer", "p-2", "CreateCustomer", name="Poison Two", email="p2@x")
    letter = page.locator("article.letter")  # the page refreshes by itself
    expect(letter.locator("header")).to_contain_text("customer/p-2")
    letter.locator("button.drop").click()
    expect(page.locator("#no-dead-letters")).to_be_visible()
    page.goto(f"{server.url}/admin/projections")
    expect(row(page, "fragile").locator(".state")).to_have_text("running")


def test_overview_updates_live_after_a_command(
    page: Any, server: ServerThread, http: httpx.Client
) -> None:
    """The overview's figures and latest events change by themselves after a command."""
    page.goto(f"{server.url}/admin")
    expect(page.locator("#live")).to_have_text("live")
    total = page.locator("#events-total")
    before = int(total.inner_text())
    expect(page.locator("#streams-count")).to_have_text("4")
    page.shot("before")
    result = command(http, "customer", "c-42", "CreateCustomer", name="Eve", email="e@x")
    position = result["events"][-1]["position"]
    expect(page.locator("body")).to_have_attribute("data-head", position)  # an SSE tick came
    expect(total).not_to_have_text(str(before))
    assert int(total.inner_text()) > before
    expect(page.locator("#streams-count")).to_have_text("5")
    expect(page.locator("#recent-events")).to_contain_text("customer/c-42")
    page.shot("after")


def test_sagas_deadlines_and_outbox(page: Any, server: ServerThread, http: httpx.Client) -> None:
    """Saga instances with their state and deadlines; outbox backlog; a failed message is
    dropped and another one retried from the outbox page."""
    command(http, "customer", "r-1", "CreateCustomer", name="Remind Me", email="r@x")
    page.goto(f"{server.url}/admin")
    page.click("nav >> text=Sagas & deadlines")
    loyalty = page.locator("#saga-loyalty")
    expect(loyalty.locator('tr[data-instance="c-1"] pre')).to_contain_text('"awarded": 30')
    reminders = page.locator("#saga-reminders")
    expect(reminders.locator("table.deadlines")).to_contain_text("follow-up")
    expect(reminders.locator("table.deadlines")).to_contain_text('"customer": "r-1"')
    expect(page.locator("#aggregate-deadlines")).to_contain_text("No pending deadline")
    page.shot("sagas")
    page.click("nav >> text=Outbox")
    expect(page.locator("#outbox-pending")).to_have_text("4")  # CustomerCreated x4, no dispatcher
    expect(page.locator("#outbox-dispatcher")).to_have_text("none")
    expect(page.locator("#outbox-messages")).to_contain_text("customer.registered")
    for message_id in ("m-drop", "m-retry"):
        server.run(failed_message(server, message_id))
    expect(page.locator("#outbox-failed")).to_have_text("2")
    page.shot("outbox")
    page.locator('tr[data-message="m-drop"] button.drop').click()
    expect(page.locator('tr[data-message="m-drop"]')).to_have_count(0)
    page.locator('tr[data-message="m-retry"] button.retry').click()
    expect(page.locator('tr[data-message="m-retry"] .state')).to_have_text("pending")
    expect(page.locator("#outbox-failed")).to_have_text("0")
    expect(page.locator("#outbox-pending")).to_have_text("5")


async def failed_message(server: ServerThread, message_id: str) -> None:
    """Put a message that exhausted its attempts in the server's outbox."""
    assert server.app is not None
    async with server.app.store.transaction() as tx:
        record(tx, Message(topic="billing.invoice", body=b'{"n": 1}', id=message_id))
    failed = {"id": message_id, "state": "failed", "attempts": 10, "last_error": "broker down"}
    async with server.app.store.transaction() as tx:
        tx.write_tables([TableWrite.upsert(OUTBOX.name, failed, ("id",))])


@pytest.fixture
def secured(ctl: Controls, tmp_path: Path) -> Iterator[ServerThread]:
    """The shop behind API keys: one that may only read, one that may also administer."""
    keys = Auth([ApiKey("reader", READER), ApiKey("ops", ADMIN, admin=True)])
    s = ServerThread("memory://", auth=HttpAuth(keys)).start()
    yield s
    s.stop()


def test_sign_in_then_read_only_key_cannot_pause(page: Any, secured: ServerThread) -> None:
    """Without credentials the UI asks to sign in; a read key sees pages but may not pause."""
    page.goto(f"{secured.url}/admin/projections")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.fill("input[name=credential]", "wrong-key-000")
    page.click("form.login button")
    expect(page.locator(".login .flash")).to_contain_text("unknown credentials")
    page.fill("input[name=credential]", READER)
    page.click("form.login button")
    expect(page.locator("h1")).to_have_text("Projections")
    receipts = row(page, "receipts")
    receipts.locator("button.pause").click()
    expect(page.locator("#flash-error")).to_contain_text("reader may not admin")
    page.shot("read-only")
    page.click("form.signout button")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.fill("input[name=credential]", ADMIN)
    page.click("form.login button")
    expect(page.locator("h1")).to_have_text("Overview")
    page.goto(f"{secured.url}/admin/projections")
    row(page, "receipts").locator("button.pause").click()
    expect(row(page, "receipts").locator(".state")).to_have_text("paused")


def test_chronik_serve_prints_and_serves_the_admin_ui(page: Any, tmp_path: Path) -> None:
    """`chronik serve` prints the admin URL; the page it names shows the overview, live."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHRONIK_STORE": ""}
    config = ROOT / "examples" / "shop" / "chronik.yaml"
    cmd = [sys.executable, "-m", "chronik.cli", "serve", "-c", str(config)]
    proc = subprocess.Popen(
        [*cmd, "--port", "0", "--http-port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = ""
        for _ in range(12):
            line = proc.stdout.readline()
            match = re.search(r"admin:\s+(http://\S+/admin)", line)
            if match:
                url = match.group(1)
                break
        assert url, "chronik serve did not print the admin URL"
        page.goto(url)
        expect(page.locator("h1")).to_have_text("Overview")
        expect(page.locator('#overview tr[data-projection="loyalty"]')).to_be_visible()
        expect(page.locator("#live")).to_have_text("live")
        page.shot("serve")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
