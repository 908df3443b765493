"""``--archive`` on ``chronik gdpr verify|forget``, ``chronik events redact`` and ``chronik
export``: through the CLI, against a real SQLite file and a directory archive, a canary in an
archived event is found before forget and redaction and nowhere after (raw blob files
included); an export with the archive holds the whole log."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
from typer.testing import CliRunner

import chronik
from chronik.cli import _build
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.personal import KeyRing

EMAIL = "canary-cli-archived-5e1a@example.test"
NOTE = "canary-cli-note-archived-c3b9"
STREAM = chronik.StreamId("customer", "c-a")


class Registered(msgspec.Struct):
    """A registration whose email is personal data of subject ``customer_id``."""

    customer_id: str
    email: str


def _cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(_build(), list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_gdpr_and_export_reach_the_archive_through_the_cli(tmp_path: Path) -> None:
    """verify --archive reports the archived canary and the open envelope; after events redact
    --archive and gdpr forget --archive it finds 0 hits, the raw blob files and an export
    scanned too; export --archive writes every event, without it only the hot ones."""
    url, arc = f"sqlite:///{tmp_path}/g.db", str(tmp_path / "arc")

    async def fill() -> tuple[str, int]:
        async with chronik.open_store(url) as store:
            keys = KeyRing(StoreKeyStore(store))
            registry = chronik.EventRegistry()
            registry.register(Registered, "customer.registered", personal={"email": "customer_id"})
            registry.use_keys(keys)
            event = Registered("c-a", EMAIL)
            await registry.load_keys([event])
            await store.append(STREAM, [registry.to_event_data(event)])
            note = chronik.EventData("customer.noted", {"note": NOTE})
            await store.append(STREAM, [note])
            for i in range(6):
                filler = chronik.EventData("filler.ticked", {"i": i})
                await store.append(chronik.StreamId("filler", "f"), [filler])
            return note.event_id, len([e async for e in store.read_all()])

    note_id, total = asyncio.run(fill())
    ran = _cli("archive", "run", "--store", url, "--archive", arc, "--retain-at-least", "2")
    assert f"archived {total - 2} events" in ran
    store_args = ("--store", url)
    verify = ("gdpr", "verify", "c-a", *store_args, "--canary", EMAIL, "--canary", NOTE)

    found = _cli(*verify, "--archive", arc, code=1)
    assert "archive segment" in found and NOTE in found
    assert "still open" in found  # the archived registration's envelope: its key exists

    hot_only = tmp_path / "hot.jsonl"
    _cli("export", *store_args, "-o", str(hot_only))
    assert len(hot_only.read_text().splitlines()) == 2 + 2  # header, end line
    whole = tmp_path / "whole.jsonl"
    _cli("export", *store_args, "--archive", arc, "-o", str(whole))
    lines = [json.loads(line) for line in whole.read_text().splitlines()]
    assert len(lines) == 2 + total and NOTE in whole.read_text()

    _cli("events", "redact", note_id, "--reason", "erasure", *store_args, "--archive", arc, "-y")
    _cli("gdpr", "forget", "c-a", *store_args, "--archive", arc, "--yes")
    after = tmp_path / "after.jsonl"
    _cli("export", *store_args, "--archive", arc, "-o", str(after))
    blobs = [str(p) for p in sorted(Path(arc).rglob("*")) if p.is_file()]
    scans = [a for p in [*blobs, str(after)] for a in ("--scan", p)]
    clean = _cli(*verify, "--archive", arc, *scans)
    assert "0 hits" in clean
    assert NOTE not in after.read_text() and EMAIL not in after.read_text()


def test_scavenge_with_the_archive_removes_archived_events_below_the_truncation(
    tmp_path: Path,
) -> None:
    """``chronik scavenge --archive`` removes a truncated stream's archived prefix too (read_all
    through the archive no longer shows it); without --archive those archived events stay."""
    url, arc = f"sqlite:///{tmp_path}/s.db", str(tmp_path / "arc")
    cut = chronik.StreamId("cut", "c")

    async def fill() -> None:
        async with chronik.open_store(url) as store:
            await store.append(cut, [chronik.EventData("cut.ticked", {"i": i}) for i in range(5)])
            filler = chronik.StreamId("filler", "f")
            await store.append(filler, [chronik.EventData("filler.ticked", {}) for _ in range(4)])

    async def shown() -> list[int]:
        from chronik.archive import Archive
        from chronik.archive.urls import open_blobs

        archive = Archive(open_blobs(arc))
        async with chronik.open_store(url) as store:
            store.attach_archive(archive)
            try:
                return [e.sequence async for e in store.read_all() if e.stream == cut]
            finally:
                await archive.close()

    asyncio.run(fill())
    _cli("archive", "run", "--store", url, "--archive", arc, "--retain-at-least", "2")
    _cli("streams", "retention", "set", "cut/c", "--truncate-before", "3", "--store", url)
    _cli("scavenge", "--store", url)
    assert asyncio.run(shown()) == [0, 1, 2, 3, 4]  # the hot store alone: archived ones stay
    _cli("scavenge", "--store", url, "--archive", arc)
    assert asyncio.run(shown()) == [3, 4]
