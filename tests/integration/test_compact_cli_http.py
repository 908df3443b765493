"""Compaction from the command line (``chronik streams compact --config``) and over HTTP
(``POST /v1/admin/streams/compact``), with the docs' ledger app: the model's summary replaces
the history, a retry answers the same summary, and bad requests are typed errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

import chronik
from chronik.lifecycle.compaction import compaction_id
from chronik.server.http import create_http_app
from chronik.server.http_retention import retention_routes

ROOT = Path(__file__).resolve().parents[2]
SNIPPETS = ROOT / "docs" / "snippets"
LEDGER = chronik.StreamId("ledger", "l1")


@pytest.fixture
def ledger() -> Iterator[ModuleType]:
    """The docs' ledger app module (``docs/snippets/ledger_compaction.py``)."""
    sys.path.insert(0, str(SNIPPETS))
    try:
        import ledger_compaction

        yield ledger_compaction
    finally:
        sys.path.remove(str(SNIPPETS))


def deposit(cents: int) -> chronik.Command:
    """A deposit to the ledger l1."""
    return chronik.Command(
        domain="ledger", aggregate_id="l1", type="Deposit", payload={"cents": cents}
    )


@pytest.fixture
async def app(ledger: ModuleType, tmp_path: Path) -> AsyncIterator[chronik.Chronik]:
    """The ledger app on SQLite with four deposits (sequences 0..3)."""
    app: chronik.Chronik = ledger.build_app(f"sqlite:///{tmp_path}/ledger.db")
    await app.store.open()
    for cents in (10, 20, 30, 40):
        await app.dispatch(deposit(cents))
    yield app
    await app.store.close()


def _client(app: chronik.Chronik, admin_writes: bool = True) -> httpx.AsyncClient:
    http = create_http_app(app, admin_writes=admin_writes, extra_routes=retention_routes())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=http), base_url="http://t")


async def test_compact_over_http(app: chronik.Chronik) -> None:
    """The summary lands at upto with the derived id (a retry answers it again), the stream
    reads from it, and bad requests are 403 / 400 / 404 problems naming what is wrong."""
    body = {"domain": "ledger", "aggregate_id": "l1", "upto": 2}
    async with _client(app, admin_writes=False) as http:
        refused = await http.post("/v1/admin/streams/compact", json=body)
        assert refused.status_code == 403
    async with _client(app) as http:
        done = await http.post("/v1/admin/streams/compact", json=body)
        assert done.status_code == 200, done.text
        answer = done.json()
        assert answer["upto"] == 2 and answer["type"] == "ledger.books_closed"
        assert answer["event_id"] == compaction_id(LEDGER, 2)
        again = await http.post("/v1/admin/streams/compact", json=body)
        assert again.json() == answer
        events = [e async for e in app.store.read_stream(LEDGER)]
        assert [(e.sequence, e.type) for e in events] == [
            (2, "ledger.books_closed"),
            (3, "ledger.deposited"),
        ]
        assert events[0].json() == {"balance": 60}
        beyond = await http.post("/v1/admin/streams/compact", json={**body, "upto": 9})
        assert beyond.status_code == 400 and beyond.json()["field"] == "upto"
        negative = await http.post("/v1/admin/streams/compact", json={**body, "upto": -1})
        assert negative.status_code == 400 and negative.json()["field"] == "upto"
        extra = await http.post("/v1/admin/streams/compact", json={**body, "x": 1})
        assert extra.status_code == 400 and extra.json()["field"] == "body"
        unknown = await http.post(
            "/v1/admin/streams/compact", json={**body, "domain": "cart", "upto": 0}
        )
        assert unknown.status_code == 404 and "cart" in unknown.text
        await app.store.delete_stream(LEDGER, hard=True)
        gone = await http.post("/v1/admin/streams/compact", json={**body, "upto": 3})
        assert gone.status_code == 404, gone.text


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(SNIPPETS)])}
    return subprocess.run(
        [sys.executable, "-m", "chronik.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


async def test_compact_from_the_cli(app: chronik.Chronik, tmp_path: Path) -> None:
    """``chronik streams compact --config`` builds the app of the file, compacts with its
    model (twice: the same summary), and an unknown domain or a missing event is one
    ``error:`` line and exit 1."""
    config = tmp_path / "chronik.yaml"
    config.write_text(f"store: sqlite:///{tmp_path}/ledger.db\napp: ledger_compaction:build_app\n")
    await app.store.close()
    first = _cli(
        "streams", "compact", "ledger/l1", "--upto", "1", "--config", str(config), "--json"
    )
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)
    assert (answer["upto"], answer["event_id"]) == (1, compaction_id(LEDGER, 1))
    again = _cli(
        "streams", "compact", "ledger/l1", "--upto", "1", "--config", str(config), "--json"
    )
    assert json.loads(again.stdout) == answer
    text = _cli("streams", "compact", "ledger/l1", "--upto", "3", "--config", str(config))
    assert text.returncode == 0 and "compacted up to 3: ledger.books_closed" in text.stdout
    for stream, upto, message in [
        ("cart/c1", "0", "cart"),
        ("ledger/l1", "7", "no event at sequence 7"),
    ]:
        bad = _cli("streams", "compact", stream, "--upto", upto, "--config", str(config))
        assert bad.returncode == 1 and bad.stderr.startswith("error:"), bad.stderr
        assert message in bad.stderr
    async with chronik.open_store(f"sqlite:///{tmp_path}/ledger.db") as store:
        events = [e async for e in store.read_stream(LEDGER)]
    assert [(e.sequence, e.json()) for e in events] == [(3, {"balance": 100})]
