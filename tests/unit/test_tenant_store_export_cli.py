"""``chronik export --tenant T`` writes one tenant's events; ``chronik import`` keeps it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

import chronik
from chronik import EventData, StreamId


def test_the_cli_exports_one_tenant_and_imports_it_in_that_tenant(tmp_path: Path) -> None:
    """Only acme's events are exported; imported, they are acme's again; a bad tenant fails."""
    from chronik.cli import _build

    a, b = (f"sqlite:///{tmp_path}/{n}.db" for n in "ab")

    async def make() -> None:
        async with chronik.open_store(a) as store:
            for tenant in ("acme", "beta", "", "acme"):
                await store.append(StreamId("d", "s", tenant), [EventData("x", {"t": tenant})])

    asyncio.run(make())
    runner = CliRunner()
    done = runner.invoke(_build(), ["export", "--store", a, "--tenant", "acme", "--no-progress"])
    assert done.exit_code == 0 and "exported 2 events" in done.stderr
    dump = tmp_path / "acme.jsonl"
    dump.write_bytes(done.stdout_bytes)
    done = runner.invoke(_build(), ["import", str(dump), "--store", b, "--json"])
    assert done.exit_code == 0, done.output

    async def read() -> list[StreamId]:
        async with chronik.open_store(b) as store:
            return [e.stream async for e in store.read_all()]

    assert asyncio.run(read()) == [StreamId("d", "s", "acme")] * 2
    bad = runner.invoke(_build(), ["export", "--store", a, "--tenant", "Not Ok", "--no-progress"])
    assert bad.exit_code != 0 and "tenant" in bad.output + bad.stderr
