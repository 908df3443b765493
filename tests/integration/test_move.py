"""Moving events between real stores (SQLite files, a PostgreSQL server), a 100k-event move in
bounded memory, an online SQLite backup while another process appends, and the CLI end to end
through subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.lifecycle import move_store
from chronik.store import EventStore

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def chronik_cli(*args: str, stdin: Any = None) -> subprocess.CompletedProcess[str]:
    """Run the ``chronik`` command in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "chronik.cli", *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=180,
    )


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    """Start a python child running ``code`` with ``args`` in sys.argv."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


async def fill(store: EventStore) -> None:
    """Every kind of event: JSON and bytes payloads, metadata, tenants, tagged (DCB) events,
    a JSON payload kept as written, streams interleaved in the global order."""
    for i in range(30):
        async with store.transaction() as tx:
            tx.append(
                chronik.StreamId("customer", f"c{i % 4}"),
                [chronik.EventData("customer.touched", {"i": i}, {"correlation_id": f"r{i}"})],
            )
            tx.append_tagged([chronik.EventData("seat.taken", {"i": i}, tags=[f"course:{i % 3}"])])
    await store.append(
        chronik.StreamId("file", "f1", tenant="acme"),
        [
            chronik.EventData("blob", bytes(range(256)), content_type="application/octet-stream"),
            chronik.EventData("spaced", b'{ "kept" : "as is" }', schema_version=2),
        ],
    )


def fields(e: chronik.RecordedEvent) -> tuple[Any, ...]:
    """What a move keeps of an event (everything but the position and the record time)."""
    return (
        e.event_id, e.stream, e.sequence, e.type, e.schema_version, e.payload, e.content_type,
        dict(e.metadata), e.tags,
    )  # fmt: skip


async def log(store: EventStore) -> list[tuple[Any, ...]]:
    """The store's whole log, in order, without positions."""
    return [fields(e) async for e in store.read_all()]


async def test_sqlite_to_postgres_and_back_keeps_ids_and_order(
    tmp_path: Path, postgres_url: str
) -> None:
    """SQLite -> PostgreSQL -> SQLite: every event id, field and the order survive both moves;
    moving again appends nothing (PostgreSQL's (xid, id) positions count what was skipped)."""
    async with (
        chronik.open_store(f"sqlite:///{tmp_path}/a.db") as a,
        chronik.open_store(postgres_url) as pg,
        chronik.open_store(f"sqlite:///{tmp_path}/b.db") as b,
    ):
        await fill(a)
        there = await move_store(a, pg)
        back = await move_store(pg, b)
        assert there.verified and back.verified, (there.problem, back.problem)
        assert await log(a) == await log(pg) == await log(b) and len(await log(b)) == 62
        tagged = [e.type async for e in pg.read_query(chronik.Query.of(tags=["course:1"]))]
        assert tagged == ["seat.taken"] * 10
        again = await move_store(a, pg)
        assert (again.imported.appended, again.imported.skipped, again.verified) == (0, 62, True)
        assert (await pg.head()) == there.target_head


FILL_100K = """
import asyncio, sys, chronik
async def main():
    pad = "x" * 1000
    async with chronik.open_store(sys.argv[1]) as s:
        for start in range(0, int(sys.argv[2]), 1000):
            async with s.transaction() as tx:
                for i in range(start, start + 1000):
                    data = chronik.EventData("e", {"i": i, "pad": pad}, {"correlation_id": str(i)})
                    if i % 10 == 9:
                        data.tags = [f"k:{i % 5}"]
                        tx.append_tagged([data])
                    else:
                        tx.append(chronik.StreamId("s", f"a{i % 997}"), [data])
asyncio.run(main())
"""


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.timeout(400)
async def test_a_100k_event_move_runs_in_bounded_memory(tmp_path: Path) -> None:
    """100k events of 1 KB (about 140 MB of SQLite) move to another store while this process
    grows by far less than the data: the move streams, it never holds the log."""
    src_url, dst_url = f"sqlite:///{tmp_path}/big.db", f"sqlite:///{tmp_path}/copy.db"
    child = spawn(FILL_100K, src_url, "100000")
    assert await asyncio.to_thread(child.wait, 300) == 0, child.stderr and child.stderr.read()
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _rss())

    async with chronik.open_store(src_url) as src, chronik.open_store(dst_url) as dst:
        await src.head()
        await dst.head()
        base = _rss()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            done = await move_store(src, dst)
        finally:
            stop.set()
            sampler.join()
    assert done.verified and done.imported.appended == 100_000
    growth = max(peak[0], _rss()) - base
    print(f"RSS growth {growth / 2**20:.1f} MiB")
    assert growth < 60 * 1024 * 1024, f"grew {growth / 2**20:.0f} MiB moving ~140 MB of events"


WRITER = """
import asyncio, sys, chronik
async def main():
    async with chronik.open_store(sys.argv[1]) as store:
        n = 0
        while True:
            async with store.transaction() as tx:  # three streams per unit, all or nothing
                for part in ("a", "b", "c"):
                    tx.append(chronik.StreamId("unit", f"{part}{n % 5}"),
                              [chronik.EventData("part", {"unit": n, "pad": "y" * 2000})])
            n += 1
            if n == 200:
                print("ready", flush=True)
asyncio.run(main())
"""


async def test_backup_while_another_process_appends(tmp_path: Path) -> None:
    """chronik backup copies a store another process keeps appending to: the backup opens,
    holds whole units only, gapless streams, and the writer never stopped."""
    url = f"sqlite:///{tmp_path}/live.db"
    writer = spawn(WRITER, url)
    try:
        assert writer.stdout is not None
        assert await asyncio.to_thread(writer.stdout.readline) == "ready\n"
        done = await asyncio.to_thread(
            chronik_cli, "backup", "--store", url, "--to", str(tmp_path / "bk.db")
        )
        assert done.returncode == 0, done.stderr
        assert "backed up to" in done.stdout and writer.poll() is None
        await asyncio.sleep(0.3)
        assert writer.poll() is None
    finally:
        writer.kill()
        writer.wait()
    async with chronik.open_store(f"sqlite:///{tmp_path}/bk.db", create=False) as bk:
        events = [e async for e in bk.read_all()]
        units = Counter(e.json()["unit"] for e in events)
        assert len(units) >= 200 and set(units.values()) == {3}
        assert sorted(units) == list(range(len(units)))
        streams: dict[chronik.StreamId, list[int]] = {}
        for e in events:
            streams.setdefault(e.stream, []).append(e.sequence)
        assert all(seqs == list(range(len(seqs))) for seqs in streams.values())
    async with chronik.open_store(url, create=False) as live:
        assert (await live.head()) > events[-1].position  # it kept writing after the copy
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("bk", ".bk"))) == [
        "bk.db"
    ]


def test_the_cli_end_to_end(tmp_path: Path, postgres_url: str) -> None:
    """export > file, import < file (twice: the second skips all), move back to SQLite with
    its check, a conflicting import and a PostgreSQL backup refused, all in child processes."""
    a, c = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/c.db"

    async def make() -> None:
        async with chronik.open_store(a) as store:
            await fill(store)

    asyncio.run(make())
    dump = tmp_path / "a.jsonl"
    with dump.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "chronik.cli", "export", "--store", a],
            stdout=out, stderr=subprocess.PIPE, text=True, env=ENV, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0 and "exported 62 events" in done.stderr, done.stderr
    assert json.loads(dump.read_text().splitlines()[0])["source"] == "sqlite"
    for appended, skipped in ((62, 0), (0, 62)):
        with dump.open("rb") as inp:
            done = chronik_cli("import", "--store", postgres_url, "--json", stdin=inp)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["appended"], report["skipped"]) == (appended, skipped)
        assert report["complete"] is True
    done = chronik_cli("move", "--from", postgres_url, "--to", c, "--json")
    assert done.returncode == 0, done.stderr
    moved = json.loads(done.stdout)
    assert (moved["appended"], moved["verified"], moved["target_events"]) == (62, True, 62)

    async def logs() -> tuple[list[Any], list[Any]]:
        async with chronik.open_store(a) as x, chronik.open_store(c) as y:
            return await log(x), await log(y)

    left, right = asyncio.run(logs())
    assert left == right
    lines = dump.read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace('"i":', '"j":')
    (tmp_path / "changed.jsonl").write_text("".join(lines))
    done = chronik_cli("import", "--store", c, str(tmp_path / "changed.jsonl"))
    assert done.returncode == 1 and done.stderr.startswith("error: line 6: event ")
    done = chronik_cli("backup", "--store", postgres_url, "--to", str(tmp_path / "pg.db"))
    assert done.returncode == 1 and "docs/how-to/backup-export.md" in done.stderr
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:10]))
    done = chronik_cli("import", "--store", f"sqlite:///{tmp_path}/d.db", str(cut))
    assert done.returncode == 1 and "cut short" in done.stderr and "9 appended" in done.stdout
