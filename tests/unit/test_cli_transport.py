"""``chronik transport dead-letters`` against a real PostgreSQL transport."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from typer.testing import CliRunner

from chronik.cli import _build
from chronik.testing.transport_kit import FAST, Recorder, eventually
from chronik.transports import Message, open_transport

runner = CliRunner()


async def _dead_lettered(url: str, topic: str, bodies: list[bytes]) -> None:
    """Subscribe two groups, make group ``billing`` give up on every message."""
    async with open_transport(url) as t:
        billing = await t.subscribe(topic, "billing", Recorder(lambda d: True), policy=FAST)
        await t.subscribe(topic, "mail", Recorder())
        for i, body in enumerate(bodies):
            await t.publish(Message(topic=topic, body=body, id=f"m-{i}"))
        await eventually(lambda: billing.dead_lettered == len(bodies), what="dead letters")


def _cli(*args: str, input: str | None = None) -> tuple[int, str]:
    out = runner.invoke(
        _build(), ["transport", "dead-letters", *args], input=input, env={"COLUMNS": "250"}
    )
    return out.exit_code, out.output


def test_list_show_retry_drop(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """list and show read without consuming; retry and drop ask, act once and are logged."""
    asyncio.run(_dead_lettered(postgres_url, "orders", [b'{"n": 1}', b'{"n": 2}']))
    t = ["--transport", postgres_url]
    code, out = _cli("list", "orders.billing.dead", *t, "--json")
    assert code == 0, out
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["message_id"] for r in rows] == ["m-0", "m-1"]
    assert {(r["topic"], r["group"], r["attempts"]) for r in rows} == {("orders", "billing", 3)}
    first, second = (r["id"] for r in rows)
    code, out = _cli("list", "orders.billing.dead", *t)
    assert code == 0 and "m-0" in out and "orders/billing" in out and "RuntimeError" in out
    code, out = _cli("show", "orders.billing.dead", first, *t)
    assert code == 0 and '{"n": 1}' in out and "group billing" in out
    code, out = _cli("show", "orders.billing.dead", first, *t, "--json")
    assert code == 0 and json.loads(out)["body"] == '{"n": 1}' and len(out.splitlines()) == 1
    narrow = runner.invoke(
        _build(),
        ["transport", "dead-letters", "list", "orders.billing.dead", *t],
        env={"COLUMNS": "80"},
    )
    assert "…" not in narrow.stdout and any(first in line for line in narrow.stdout.splitlines())

    code, out = _cli("retry", "orders.billing.dead", first, *t, input="n\n")
    assert code == 1 and "Aborted" in out  # declined: nothing happened
    assert len(_cli("list", "orders.billing.dead", *t, "--json")[1].splitlines()) == 2
    with caplog.at_level(logging.WARNING, logger="chronik.transports.dead_letters"):
        code, out = _cli("retry", "orders.billing.dead", first, *t, input="y\n")
        assert code == 0 and f"retried {first} (message m-0) to orders/billing" in out
        code, out = _cli("drop", "orders.billing.dead", second, *t, "--yes")
        assert code == 0 and f"dropped {second}" in out
    assert "retried to orders/billing by cli:" in caplog.text
    assert "dropped by cli:" in caplog.text
    code, out = _cli("list", "orders.billing.dead", *t)
    assert code == 0 and "no dead letters" in out

    code, out = _cli("retry", "orders.billing.dead", first, *t, "--yes")
    assert code == 1 and "error: no dead letter" in out  # retried already: never twice
    code, out = _cli("list", "Bad Queue", *t)
    assert code == 1 and "error: invalid queue" in out
