"""``chronik streams delete``, ``chronik streams retention set|show`` and ``chronik scavenge``
against a real SQLite store; the scavenger's config section and its supervised runner."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import chronik
from chronik.cli import _build
from chronik.errors import ConfigurationError
from chronik.lifecycle.scavenger import LEASE, Scavenger
from chronik.server.config import load_config

M1 = chronik.StreamId("metrics", "m1")


def _fill(url: str) -> None:
    async def fill() -> None:
        async with chronik.open_store(url) as store:
            await store.append(M1, [chronik.EventData("tick", {"i": i}) for i in range(5)])
            await store.append(chronik.StreamId("audit", "a1"), [chronik.EventData("seen")])

    asyncio.run(fill())


def _cli(url: str, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(_build(), [*args, "--store", url])
    assert result.exit_code == code, result.output
    return result.stdout


def _sequences(url: str, stream: chronik.StreamId) -> list[int]:
    async def read() -> list[int]:
        async with chronik.open_store(url) as store:
            return [e.sequence async for e in store.read_stream(stream)]

    return asyncio.run(read())


def test_retention_set_show_and_scavenge(tmp_path: Path) -> None:
    """Rules set by the CLI show back; scavenge --dry-run reports without removing, then a
    real run removes what the rules (and a config file's domain defaults) let go."""
    url = f"sqlite:///{tmp_path}/s.db"
    _fill(url)
    set_line = _cli(url, "streams", "retention", "set", "metrics/m1", "--max-count", "2", "--json")
    assert json.loads(set_line)["max_count"] == 2 and len(set_line.splitlines()) == 1
    shown = json.loads(_cli(url, "streams", "retention", "show", "metrics/m1", "--json"))
    assert shown == {
        "stream": "metrics/m1",
        "max_age": None,
        "max_count": 2,
        "truncate_before": None,
    }
    dry = json.loads(_cli(url, "scavenge", "--dry-run", "--json"))
    assert (dry["dry_run"], dry["events"], dry["streams"]) == (True, 3, 1)
    assert _sequences(url, M1) == [0, 1, 2, 3, 4]
    config = tmp_path / "chronik.yaml"
    config.write_text("retention:\n  domains:\n    metrics: {max_count: 1}\n")
    out = _cli(url, "scavenge", "--config", str(config))
    assert out.startswith("removed 3 events")  # the stream's own max_count (2) wins
    assert _sequences(url, M1) == [3, 4]
    bad = _cli(url, "streams", "retention", "set", "metrics/m1", "--max-age", "soon", code=1)
    assert bad == ""


def test_streams_delete_soft_and_hard(tmp_path: Path) -> None:
    """streams delete soft-deletes (the stream reads empty), --hard tombstones it (reads then
    fail with a one-line error), a wrong --expected is refused."""
    url = f"sqlite:///{tmp_path}/d.db"
    _fill(url)
    _cli(url, "streams", "delete", "metrics/m1", "--expected", "3", code=1)
    assert "soft-deleted" in _cli(url, "streams", "delete", "metrics/m1", "--expected", "4")
    assert _sequences(url, M1) == []
    assert "tombstoned" in _cli(url, "streams", "delete", "audit/a1", "--hard")
    result = CliRunner().invoke(_build(), ["events", "read", "audit/a1", "--store", url])
    assert result.exit_code == 1 and "tombstoned" in result.output


def test_scavenge_refuses_while_another_process_holds_the_lease(tmp_path: Path) -> None:
    """chronik scavenge exits 1 (and removes nothing) while a server's scavenger holds the
    store's lease."""
    url = f"sqlite:///{tmp_path}/l.db"
    _fill(url)

    async def hold() -> None:
        async with chronik.open_store(url) as store:
            await store.acquire_lease(LEASE, "server-a", 60.0)

    asyncio.run(hold())
    result = CliRunner().invoke(_build(), ["scavenge", "--store", url])
    assert result.exit_code == 1 and "lease" in result.output


def test_retention_config_is_checked(tmp_path: Path) -> None:
    """A bad retention section is refused naming the setting; a good one builds the
    scavenger with its domain defaults and interval."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("retention:\n  domains:\n    metrics: {max_count: 0}\n")
    with pytest.raises(ConfigurationError, match=r"retention\.domains\.metrics\.max_count"):
        load_config(bad).retention.check()
    good = tmp_path / "good.yaml"
    good.write_text(
        "retention:\n  domains:\n    audit: {max_age: 30d}\n"
        "  scavenger: {enabled: true, interval: 2h, batch_size: 100}\n"
    )
    section = load_config(good).retention
    shown = load_config(Path(__file__).parents[2] / "docs/snippets/library-retention.yaml")
    assert shown.retention.scavenger_for(chronik.Chronik(store="memory://")).interval == 3600.0
    app = chronik.Chronik(store="memory://")
    scavenger = section.scavenger_for(app)
    assert scavenger.interval == 7200.0 and scavenger.batch_size == 100
    assert scavenger.defaults["audit"].max_age == 30 * 86400.0


async def test_the_supervised_scavenger_runs_and_reports_health() -> None:
    """run_forever (as chronik serve supervises it) runs at once, records its report in
    health, and is found by running_on until it stops."""
    async with chronik.open_store("memory://") as store:
        await store.append(M1, [chronik.EventData("tick") for _ in range(3)])
        await store.set_retention(M1, chronik.Retention(max_count=1))
        scavenger = Scavenger(store, interval=3600.0)
        task = asyncio.create_task(scavenger.run_forever())
        async with asyncio.timeout(5):
            while scavenger.runs == 0:
                await asyncio.sleep(0.01)
        assert Scavenger.running_on(store) is scavenger
        health = scavenger.health()
        assert health["last_report"]["events"] == 2 and health["last_error"] is None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert Scavenger.running_on(store) is None
        await scavenger.stop()
        assert [e.sequence async for e in store.read_stream(M1)] == [2]


async def test_serve_supervises_the_scavenger_and_stops_it() -> None:
    """start_scavenger (chronik serve's) registers the supervised task ``scavenger``: health
    shows it running after its first run; the stop step ends it and lets the lease go."""
    from chronik.server.retention import (
        RetentionConfig,
        RetentionRule,
        ScavengerConfig,
        start_scavenger,
    )

    async with chronik.open_store("memory://") as store:
        await store.append(M1, [chronik.EventData("tick") for _ in range(3)])
        app = chronik.Chronik(store=store)
        section = RetentionConfig(
            domains={"metrics": RetentionRule(max_count=1)},
            scavenger=ScavengerConfig(enabled=True, interval="1h"),
        )
        scavenger, stop = start_scavenger(section, app)
        async with asyncio.timeout(5):
            while scavenger.runs == 0:
                await asyncio.sleep(0.01)
        assert app.health.tasks["scavenger"].state == "running"
        assert [e.sequence async for e in store.read_stream(M1)] == [2]
        await stop()
        assert app.health.tasks["scavenger"].state != "running"
        leases = await store.read_leases(LEASE)
        assert all(lease.expires_at_us <= time.time_ns() // 1000 for lease in leases)
