"""SQLite on a full disk (a 2 MB tmpfs): typed errors, nothing partial, health says so, and
the store works again once space is freed."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import chronik
from chronik import EventData, StreamId
from chronik.store.base import EventStore, TableSpec, TableWrite
from chronik.testing.services import unavailable

TABLE = TableSpec("rm_full", (("id", "TEXT"), ("blob", "BLOB")), ("id",))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted for the test (root only), unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def _unit(store: EventStore, i: int) -> None:
    """Two streams and a read-model row, ~60 KB in all."""
    async with store.transaction() as tx:
        for side in ("a", "b"):
            tx.append(StreamId("full", f"{side}{i}"), [EventData("filled", {"pad": "x" * 20_000})])
        tx.write_tables(
            [TableWrite.upsert(TABLE.name, {"id": f"r{i}", "blob": b"\1" * 20_000}, ("id",))]
        )


async def _parts(store: EventStore, i: int) -> list[bool]:
    return [
        await store.stream_version(StreamId("full", f"a{i}")) is not None,
        await store.stream_version(StreamId("full", f"b{i}")) is not None,
        bool(await store.read_table(TABLE.name, {"id": f"r{i}"})),
    ]


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_a_full_disk_fails_units_typed_and_recovers(small_disk: Path, synchronous: str) -> None:
    """Units that hit ENOSPC fail with StoreUnavailable and leave nothing; health turns not ok;
    after space is freed the next write succeeds, health is ok, integrity_check is ok."""
    path = small_disk / "events.db"
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * 400_000)

    async def scenario() -> int:
        store = await chronik.open_store(f"sqlite:///{path}?synchronous={synchronous}").open()
        try:
            async with store.transaction() as tx:
                tx.write_tables([TableWrite("ensure", TABLE.name, spec=TABLE)])
            outcomes: list[BaseException | None] = []
            for round_ in range(20):  # 4 units at once: one group-commit batch each round
                got = await asyncio.wait_for(
                    asyncio.gather(
                        *(_unit(store, 4 * round_ + k) for k in range(4)), return_exceptions=True
                    ),
                    20,
                )
                outcomes += got
                if any(o is not None for o in got):
                    break
            failed = [i for i, o in enumerate(outcomes) if o is not None]
            assert failed, "the disk never filled up"
            for i, outcome in enumerate(outcomes):
                parts = await _parts(store, i)
                if outcome is None:
                    assert all(parts), (i, parts)
                else:
                    assert isinstance(outcome, chronik.StoreUnavailable), repr(outcome)
                    assert not any(parts), (i, parts, outcome)
            health = store.health
            assert not health.ok and health.since is not None and health.failures >= 1
            assert "full" in health.detail, health.detail
            assert _integrity(path) == "ok"
            os.unlink(ballast)  # the operator frees space
            await _unit(store, 1000)
            assert all(await _parts(store, 1000))
            assert store.health.ok
            return len(outcomes) - len(failed)
        finally:
            await store.close()

    committed = asyncio.run(scenario())
    assert _integrity(path) == "ok"

    async def reopen() -> None:
        async with chronik.open_store(f"sqlite:///{path}") as store:
            streams = [s async for s in store.list_streams("full")]
            assert len(streams) == 2 * (committed + 1)

    asyncio.run(reopen())
