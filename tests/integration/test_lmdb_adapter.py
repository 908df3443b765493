"""lmdb:// with real OS processes and a real (small) disk: kill -9 mid-burst, the single-process
lock, reopening after a crash, map growth and a full map or disk."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import chronik
from chronik import EventData, StreamId
from chronik.store.base import EventStore, TableSpec, TableWrite
from chronik.testing.services import unavailable

pytest.importorskip("lmdb")

ROOT = Path(__file__).resolve().parents[2]
TABLE = TableSpec("rm_fill", (("id", "TEXT"), ("blob", "BLOB")), ("id",))


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    """Start a python child running ``code`` with ``args`` in sys.argv."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


# Units of three events on one of five streams plus a read-model row, from 8 concurrent tasks
# (so batches of several units commit together); each acknowledged unit is printed.
BURST = """
import asyncio, sys, chronik
from chronik.store.base import TableSpec, TableWrite
TABLE = TableSpec("rm_burst", (("id", "TEXT"), ("n", "INTEGER")), ("id",))
async def main():
    async with chronik.open_store(sys.argv[1]) as store:
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("ensure", TABLE.name, spec=TABLE)])
        print("ready", flush=True)
        async def worker(k):
            n = 0
            while True:
                unit = f"{k}-{n}"
                async with store.transaction() as tx:
                    s = chronik.StreamId("crash", f"s{n % 5}")
                    tx.append(s, [chronik.EventData("crash.part", {"unit": unit, "part": p})
                                  for p in range(3)])
                    tx.write_tables([TableWrite.upsert(TABLE.name, {"id": unit, "n": n}, ("id",))])
                print(unit, flush=True)
                n += 1
        await asyncio.gather(*(worker(k) for k in range(8)))
asyncio.run(main())
"""


async def test_kill_9_mid_burst_loses_no_acknowledged_unit_and_leaves_none_partial(
    tmp_path: Path,
) -> None:
    """After SIGKILL of a writer mid-burst, every unit it acknowledged is stored whole, no unit
    is stored in part, streams stay gapless, and the reopened store takes new appends."""
    url = f"lmdb:///{tmp_path}/crash"
    child = spawn(BURST, url)
    assert child.stdout is not None
    assert (await asyncio.to_thread(child.stdout.readline)).strip() == "ready"
    await asyncio.sleep(0.6)
    child.send_signal(signal.SIGKILL)
    out, _ = await asyncio.to_thread(child.communicate, timeout=10)
    assert child.returncode == -signal.SIGKILL
    acked = set(out.split())
    assert len(acked) > 20  # it was really writing when it died
    async with chronik.open_store(url) as store:
        parts: dict[str, list[int]] = {}
        for e in [e async for e in store.read_all()]:
            parts.setdefault(e.json()["unit"], []).append(e.json()["part"])
        assert all(p == [0, 1, 2] for p in parts.values())  # nothing partial
        assert acked <= set(parts)  # nothing acknowledged is lost
        rows = {r["id"] for r in await store.read_table("rm_burst")}
        assert rows == set(parts)  # the rows went with their events, all or nothing
        for i in range(5):
            s = StreamId("crash", f"s{i}")
            seqs = [e.sequence async for e in store.read_stream(s)]
            assert seqs == list(range(len(seqs)))
            result = await store.append(s, [EventData("after.crash", {})], seqs[-1])
            assert result.first_sequence == len(seqs)


HOLDER = """
import asyncio, sys, chronik
async def main():
    async with chronik.open_store(sys.argv[1]) as store:
        await store.append(chronik.StreamId("held", "h1"), [chronik.EventData("held", {})])
        print("open", flush=True)
        await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_a_second_process_is_refused_until_the_first_exits(tmp_path: Path) -> None:
    """While one process has the store open, another gets StoreUnavailable naming the path;
    once the holder is killed, the store opens with the holder's events."""
    url = f"lmdb:///{tmp_path}/held"
    child = spawn(HOLDER, url)
    try:
        assert child.stdout is not None
        assert (await asyncio.to_thread(child.stdout.readline)).strip() == "open"
        with pytest.raises(chronik.StoreUnavailable) as info:
            await chronik.open_store(url).open()
        assert str(tmp_path / "held") in str(info.value)
        assert "another process" in str(info.value)
    finally:
        child.kill()
        await asyncio.to_thread(child.wait, 10)
    async with chronik.open_store(url) as store:
        assert await store.stream_version(StreamId("held", "h1")) == 0


async def test_a_second_store_in_the_same_process_is_refused(tmp_path: Path) -> None:
    """LMDB forbids opening one environment twice in a process: the second store object is
    refused with StoreUnavailable, and can open once the first is closed."""
    url = f"lmdb:///{tmp_path}/twice"
    async with chronik.open_store(url) as first:
        await first.append(StreamId("t", "1"), [EventData("x", {})])
        with pytest.raises(chronik.StoreUnavailable):
            await chronik.open_store(url).open()
    async with chronik.open_store(url) as again:
        assert await again.stream_version(StreamId("t", "1")) == 0


async def test_missing_store_with_create_false_is_unavailable(tmp_path: Path) -> None:
    """create=False on a directory without a store raises StoreUnavailable and creates
    nothing."""
    with pytest.raises(chronik.StoreUnavailable, match="no store at"):
        await chronik.open_store(f"lmdb:///{tmp_path}/none", create=False).open()
    assert not (tmp_path / "none").exists()


async def test_bad_options_are_configuration_errors(tmp_path: Path) -> None:
    """Unknown or bad URL options fail with ConfigurationError naming the option."""
    for query, word in (("sync=fast", "sync"), ("map_size=12", "map_size"), ("nope=1", "nope")):
        with pytest.raises(chronik.ConfigurationError, match=word):
            chronik.open_store(f"lmdb:///{tmp_path}/x?{query}")
    with pytest.raises(chronik.ConfigurationError, match="max_size"):
        chronik.open_store(f"lmdb:///{tmp_path}/x?map_size=4194304&max_size=1048576")


async def _fill(store: EventStore, units: int, size: int = 20_000) -> None:
    async with store.transaction() as tx:
        tx.write_tables([TableWrite("ensure", TABLE.name, spec=TABLE)])
    for i in range(units):
        async with store.transaction() as tx:
            tx.append(StreamId("fill", f"f{i}"), [EventData("filled", {"pad": "x" * size})])
            tx.write_tables(
                [TableWrite.upsert(TABLE.name, {"id": f"r{i}", "blob": b"\1" * size}, ("id",))]
            )


async def test_the_map_grows_as_the_store_fills_and_stays_grown(tmp_path: Path) -> None:
    """A store opened with a 1 MiB map takes 5 MB of units: the map doubles as needed, every
    unit is stored, and a reopened store keeps the grown map."""
    url = f"lmdb:///{tmp_path}/grow?map_size=1048576"
    async with chronik.open_store(url) as store:
        await _fill(store, 120)
        grown = store.map_size  # type: ignore[attr-defined]
        assert grown >= 4 * 1048576
        assert len([e async for e in store.read_all()]) == 120
        assert len(await store.read_table(TABLE.name)) == 120
        assert store.health.ok
    async with chronik.open_store(url) as store:
        assert store.map_size == grown  # type: ignore[attr-defined]
        assert len([e async for e in store.read_all()]) == 120


async def test_a_full_map_at_max_size_is_a_typed_error_with_nothing_written(
    tmp_path: Path,
) -> None:
    """When the map may not grow past max_size, the unit that does not fit fails with
    StoreUnavailable saying so, nothing of it is written, health says so, and smaller writes
    and reads still work."""
    url = f"lmdb:///{tmp_path}/cap?map_size=1048576&max_size=2097152"
    async with chronik.open_store(url) as store:
        await _fill(store, 20)
        big = StreamId("fill", "big")
        with pytest.raises(chronik.StoreUnavailable, match="max_size") as info:
            async with store.transaction() as tx:
                tx.append(big, [EventData("filled", {"pad": "y" * 900_000})])
                tx.append(StreamId("fill", "big2"), [EventData("filled", {"pad": "z" * 900_000})])
                tx.write_tables(
                    [TableWrite.upsert(TABLE.name, {"id": "big", "blob": b"\2"}, ("id",))]
                )
        assert not info.value.outcome_unknown
        assert not store.health.ok and "full" in store.health.detail
        assert await store.stream_version(big) is None
        assert await store.stream_version(StreamId("fill", "big2")) is None
        assert await store.read_table(TABLE.name, {"id": "big"}) == []
        assert store.map_size == 2097152  # type: ignore[attr-defined]
        await store.append(StreamId("fill", "small"), [EventData("small", {})])
        assert store.health.ok
        assert len([e async for e in store.read_all()]) == 21


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


async def test_a_full_disk_fails_units_typed_and_whole(small_disk: Path) -> None:
    """On a full disk (a 2 MB tmpfs) units fail with StoreUnavailable, each stored whole or
    not at all, and the store reopens with exactly the units that were acknowledged."""
    url = f"lmdb:///{small_disk}/db"
    acked: list[int] = []
    async with chronik.open_store(url) as store:
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("ensure", TABLE.name, spec=TABLE)])
        failures = 0
        for i in range(200):
            try:
                async with store.transaction() as tx:
                    for side in ("a", "b"):
                        tx.append(
                            StreamId("full", f"{side}{i}"), [EventData("f", {"p": "x" * 20_000})]
                        )
                    tx.write_tables(
                        [
                            TableWrite.upsert(
                                TABLE.name, {"id": f"r{i}", "blob": b"\1" * 20_000}, ("id",)
                            )
                        ]
                    )
                acked.append(i)
            except chronik.StoreUnavailable as exc:
                assert not exc.outcome_unknown
                failures += 1
                if failures == 3:
                    break
        assert failures == 3, "the disk never filled"
        assert not store.health.ok
    async with chronik.open_store(url) as store:
        for i in range(acked[-1] + 2):
            parts = [
                await store.stream_version(StreamId("full", f"a{i}")) is not None,
                await store.stream_version(StreamId("full", f"b{i}")) is not None,
                bool(await store.read_table(TABLE.name, {"id": f"r{i}"})),
            ]
            assert parts == [i in acked] * 3, (i, parts)
