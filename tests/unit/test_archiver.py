"""The archiver (``chronik.lifecycle.archiver``): seals the old log in segments, keeps
``retain_at_least`` hot, survives a kill between a seal and its drop, holds a lease; and the
``chronik archive run|status|verify`` commands against a real SQLite file and directory."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from typer.testing import CliRunner

import chronik
from chronik.archive import Archive, MemoryBlobs
from chronik.archive.urls import open_blobs
from chronik.cli import _build
from chronik.lifecycle.archiver import Archiver, archive_log
from chronik.store.base import EventStore

S = [chronik.StreamId("acct", f"a{i}") for i in range(3)]


async def _fill(store: EventStore, n: int = 30) -> list[chronik.RecordedEvent]:
    for i in range(n):
        await store.append(S[i % 3], [chronik.EventData("acct.moved", {"i": i})])
    return [e async for e in store.read_all()]


async def _hot(store: EventStore) -> int:
    attached = store.archive
    store.attach_archive(None)
    try:
        return len([e async for e in store.read_all()])
    finally:
        store.attach_archive(attached)


async def test_archive_log_seals_segments_and_keeps_the_hot_tail() -> None:
    """A run seals all but the last retain_at_least events in segments and drops them; reads
    through the archive still see every event in order; a second run has nothing to do."""
    async with chronik.open_store("memory://") as store:
        events = await _fill(store)
        archive = Archive(MemoryBlobs())
        await archive.open()
        store.attach_archive(archive)
        report = await archive_log(store, archive, retain_at_least=5, segment_events=10)
        assert (report.segments, report.events, report.dropped) == (3, 25, 25)
        assert len(archive.segments) == 3 and archive.horizon == events[24].position
        assert await store.archive_floor() == events[24].position
        assert await _hot(store) == 5
        assert [e async for e in store.read_all()] == events
        assert [e.sequence async for e in store.read_stream(S[1])] == list(range(10))
        again = await archive_log(store, archive, retain_at_least=5, segment_events=10)
        assert again.events == 0 and await archive.verify() == []


async def test_dry_run_and_max_age_change_nothing_they_should_not() -> None:
    """dry_run counts without sealing; max_age keeps young events hot."""
    async with chronik.open_store("memory://") as store:
        await _fill(store, 12)
        archive = Archive(MemoryBlobs())
        await archive.open()
        dry = await archive_log(store, archive, retain_at_least=2, dry_run=True)
        assert dry.events == 10 and archive.horizon is None and await _hot(store) == 12
        young = await archive_log(store, archive, retain_at_least=2, max_age=3600)
        assert young.events == 0 and await _hot(store) == 12


_KILLED = """
import asyncio, os, chronik
from chronik.archive import Archive
from chronik.archive.urls import open_blobs
from chronik.lifecycle.archiver import archive_log

async def main():
    archive = Archive(open_blobs({blobs!r}))
    await archive.open()
    async with chronik.open_store({url!r}) as store:
        async def die(progress):
            os._exit(9)  # killed right after the first seal, before its drop
        await archive_log(store, archive, retain_at_least=4, segment_events=8, on_segment=die)

asyncio.run(main())
"""


async def test_a_kill_between_seal_and_drop_is_completed_by_the_next_run(tmp_path: Path) -> None:
    """A process killed after sealing a segment but before dropping it leaves the archive
    ahead of the hot floor; reads see no duplicate, and the next run drops that range first."""
    url, blobs = f"sqlite:///{tmp_path}/k.db", str(tmp_path / "arc")
    async with chronik.open_store(url) as store:
        events = await _fill(store, 20)
    script = textwrap.dedent(_KILLED).format(url=url, blobs=blobs)
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], check=False)
    assert done.returncode == 9
    archive = Archive(open_blobs(blobs))
    await archive.open()
    assert archive.horizon == events[7].position  # sealed ...
    async with chronik.open_store(url) as store:
        assert await store.archive_floor() is None and await _hot(store) == 20  # ... not dropped
        store.attach_archive(archive)
        assert [e async for e in store.read_all()] == events
        report = await archive_log(store, archive, retain_at_least=4, segment_events=8)
        assert report.recovered == 8 and report.events == 8
        assert await _hot(store) == 4 and await store.archive_floor() == events[15].position
        assert [e async for e in store.read_all()] == events
        assert [e async for e in store.read_all(backward=True)] == events[::-1]


async def test_the_archiver_holds_a_lease_and_reports_health() -> None:
    """One archiver per store: another owner's run_once answers None while the lease is held;
    health shows the last run."""
    async with chronik.open_store("memory://") as store:
        await _fill(store, 10)
        archive = Archive(MemoryBlobs())
        await archive.open()
        one = Archiver(store, archive, retain_at_least=3, interval=3600, owner="one")
        two = Archiver(store, archive, retain_at_least=3, interval=3600, owner="two")
        report = await one.run_once()
        assert report is not None and report.events == 7
        assert await two.run_once() is None
        async with one:
            await asyncio.sleep(0.05)
            health = one.health()
        assert health["running"] and health["ok"] and health["runs"] >= 1
        assert health["horizon"] == str(archive.horizon)


def test_archive_cli_runs_reports_and_verifies(tmp_path: Path) -> None:
    """chronik archive run seals and drops, status shows horizon and floor, verify passes and
    then fails once a segment blob is damaged."""
    url, arc = f"sqlite:///{tmp_path}/c.db", str(tmp_path / "arc")

    async def fill() -> None:
        async with chronik.open_store(url) as store:
            await _fill(store, 12)

    asyncio.run(fill())

    def cli(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(_build(), [*args, "--store", url, "--archive", arc])
        assert result.exit_code == code, result.output
        return result.stdout

    out = cli("archive", "run", "--retain-at-least", "2", "--segment-events", "4", "--json")
    assert json.loads(out)["events"] == 10 and json.loads(out)["segments"] == 3
    status = json.loads(cli("archive", "status", "--json"))
    assert status["archived_events"] == 10 and status["hot_floor"] == status["horizon"] == "10"
    assert "verified" in cli("archive", "verify")
    dat = sorted((tmp_path / "arc").rglob("*.dat"))[0]
    dat.write_bytes(dat.read_bytes()[:-3] + b"xyz")
    cli("archive", "verify", code=1)


def test_the_archive_config_section_is_checked(tmp_path: Path) -> None:
    """The serve config's archive section loads with defaults and refuses bad values, naming
    the setting."""
    import pytest

    from chronik.errors import ConfigurationError
    from chronik.server.config import load_config

    good = tmp_path / "good.yaml"
    good.write_text(f"archive: {{url: {tmp_path / 'arc'}, retain_at_least: 10, interval: 2m}}\n")
    section = load_config(good).archive
    assert section is not None and section.retain_at_least == 10 and section.archiver
    section.check()
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"archive: {{url: {tmp_path}, interval: soon}}\n")
    with pytest.raises(ConfigurationError, match=r"archive\.interval"):
        bad_section = load_config(bad).archive
        assert bad_section is not None
        bad_section.check()


async def test_serve_attaches_the_archive_and_supervises_the_archiver(tmp_path: Path) -> None:
    """open_archiving (chronik serve's) attaches the archive to the app's store, and the
    supervised task ``archiver`` seals and drops; its stop step ends it."""
    from chronik.server.archiving import ArchiveConfig, open_archiving

    async with chronik.open_store(f"sqlite:///{tmp_path}/s.db") as store:
        events = await _fill(store, 15)
        app = chronik.Chronik(store=store)
        section = ArchiveConfig(url=str(tmp_path / "arc"), retain_at_least=5, interval="1h")
        archiving = await open_archiving(section, app)
        assert store.archive is archiving.archive
        stop = archiving.start()
        async with asyncio.timeout(5):
            while archiving.archiver.runs == 0:
                await asyncio.sleep(0.01)
        assert app.health.tasks["archiver"].state == "running"
        assert archiving.archiver.health()["running"]
        assert await _hot(store) == 5
        assert [e async for e in store.read_all()] == events
        await stop()
        assert app.health.tasks["archiver"].state != "running"


async def test_serve_preloads_the_segment_indexes(tmp_path: Path) -> None:
    """Started by serve, the archive loads every sealed segment's index in the background, so
    the first read of an archived stream fetches blocks only."""
    from chronik.server.archiving import ArchiveConfig, open_archiving

    async with chronik.open_store(f"sqlite:///{tmp_path}/s.db") as store:
        await _fill(store, 30)
        sealed = Archive(open_blobs(str(tmp_path / "arc")))
        await archive_log(store, sealed, retain_at_least=3, segment_events=5)
        await sealed.close()
        app = chronik.Chronik(store=store)
        section = ArchiveConfig(url=str(tmp_path / "arc"), archiver=False)
        archiving = await open_archiving(section, app)
        assert len(archiving.archive._indexes) == 0
        stop = archiving.start()
        async with asyncio.timeout(5):
            while len(archiving.archive._indexes) < len(archiving.archive._segments):
                await asyncio.sleep(0.01)
        assert len(archiving.archive._segments) >= 5
        await stop()


async def test_a_projection_builds_from_archived_and_hot_events(tmp_path: Path) -> None:
    """A projection started after archiving sees every event once, archived ones first."""
    from chronik.projections import Projection, ProjectionProcessor, ReadModel

    seen: list[str] = []
    counting = Projection("counting")

    @counting.on("acct.moved")
    async def count(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        seen.append(event.event_id)

    async with chronik.open_store(f"sqlite:///{tmp_path}/p.db") as store:
        events = await _fill(store, 40)
        archive = Archive(open_blobs(str(tmp_path / "arc")))
        await archive.open()
        store.attach_archive(archive)
        await archive_log(store, archive, retain_at_least=6, segment_events=7)
        head = await store.head()
        assert head is not None and await _hot(store) == 6
        async with ProjectionProcessor(store, counting) as proc:
            await asyncio.wait_for(proc.wait_for(head), 10)
        assert seen == [e.event_id for e in events]
