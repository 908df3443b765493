"""``chronik outbox`` against a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

import chronik
from chronik.cli import _build
from chronik.outbox import OutboxDispatcher, record
from chronik.transports.memory import MemoryTransport
from chronik.transports.message import Message

runner = CliRunner()


class Down(MemoryTransport):
    """A transport that is always down."""

    async def _publish(self, message: Message) -> None:
        raise chronik.ChronikError("down")


def test_status_list_retry_drop(tmp_path: Path) -> None:
    """status counts, list shows errors, retry and drop act on failed messages only."""
    url = f"sqlite:///{tmp_path}/o.db"

    async def fill() -> None:
        async with chronik.open_store(url) as store:
            for n in range(3):
                async with store.transaction() as tx:
                    record(
                        tx, Message(topic="shop.registered", body=b"{}", id=f"m-{n}", key=f"c{n}")
                    )
            async with Down("memory://") as down:
                await OutboxDispatcher(store, down, max_attempts=1).dispatch_once()

    asyncio.run(fill())
    app = _build()
    status = runner.invoke(app, ["outbox", "status", "--store", url, "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.output)["failed"] == 3
    listed = runner.invoke(app, ["outbox", "list", "--store", url, "--state", "failed", "--json"])
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [r["id"] for r in rows] == ["m-0", "m-1", "m-2"] and "down" in rows[0]["last_error"]
    assert (
        "1 message(s) will be sent again"
        in runner.invoke(app, ["outbox", "retry", "m-1", "--store", url]).output
    )
    assert "2 message(s) dropped" in runner.invoke(app, ["outbox", "drop", "--store", url]).output
    final = json.loads(runner.invoke(app, ["outbox", "status", "--store", url, "--json"]).output)
    assert (final["pending"], final["failed"]) == (1, 0)
    missing = runner.invoke(app, ["outbox", "retry", "m-9", "--store", url])
    assert missing.exit_code == 1 and "no failed outbox message" in missing.output


def test_status_and_list_say_which_key_a_failed_message_blocks(tmp_path: Path) -> None:
    """A failed message's held-back successors show in status (count, key) and in list."""
    url = f"sqlite:///{tmp_path}/o.db"

    async def fill() -> None:
        async with chronik.open_store(url) as store:
            for n in range(2):
                async with store.transaction() as tx:
                    record(tx, Message(topic="shop.registered", body=b"{}", id=f"a-{n}", key="a"))
            async with Down("memory://") as down:
                await OutboxDispatcher(store, down, max_attempts=1).dispatch_once()

    asyncio.run(fill())
    app = _build()
    status = runner.invoke(app, ["outbox", "status", "--store", url])
    assert "blocked: 1 pending message(s)" in status.output and "key a" in status.output
    listed = runner.invoke(app, ["outbox", "list", "--store", url, "--json"])
    rows = {r["id"]: r for r in map(json.loads, listed.output.splitlines())}
    assert rows["a-1"]["blocked_by"] == "a-0" and rows["a-0"]["state"] == "failed"
