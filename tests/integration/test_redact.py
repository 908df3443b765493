"""Redacting one event in place (memory, SQLite, PostgreSQL): marker, audit, snapshot, decode."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

import chronik
from chronik.cli import _build
from chronik.lifecycle.forget import compact_sqlite
from chronik.lifecycle.redact import REDACTED_EVENT, redact_event
from chronik.lifecycle.verify import verify_subject
from chronik.messages import REDACTED
from chronik.personal.redacted import Redacted
from chronik.repository import Repository

SECRET = "canary-redact-9d41@example.test"


class Noted(msgspec.Struct):
    """A note with free text (where a secret slipped in)."""

    text: str


class Renamed(msgspec.Struct):
    """A rename whose old versions need an upcaster (to prove it never sees a marker)."""

    name: str


def _registry() -> chronik.EventRegistry:
    """Notes at v1 and renames at v2 with an upcaster that would crash on a marker."""
    registry = chronik.EventRegistry()
    registry.register(Noted, "note.added")
    registry.register(Renamed, "note.renamed", version=2)
    registry.add_upcaster("note.renamed", 1, lambda p: {"name": p["title"]})
    return registry


def _evolve(state: list[str], event: object) -> list[str]:
    """A decider fold: texts of notes; a redacted event (or anything else) changes nothing."""
    return [*state, event.text] if isinstance(event, Noted) else state


async def _fill(store: chronik.EventStore) -> list[chronik.RecordedEvent]:
    """Three events on note/n-1 (the second carries the secret, the third is an old v1
    rename) and a snapshot of the stream."""
    stream = chronik.StreamId("note", "n-1")
    await store.append(
        stream,
        [
            chronik.EventData("note.added", {"text": "hello"}),
            chronik.EventData("note.added", {"text": f"call {SECRET}"}),
            chronik.EventData("note.renamed", {"title": "x"}, schema_version=1),
        ],
    )
    snap = chronik.Snapshot(stream, 1, "note", 1, msgspec.json.encode({"texts": [SECRET]}))
    await store.save_snapshot(snap)
    return [e async for e in store.read_stream(stream)]


async def _redact_and_check(store: chronik.EventStore) -> None:
    """Redact the secret event and the old rename; check marker, audit, snapshot, decoding."""
    events = await _fill(store)
    target, old = events[1], events[2]
    report = await redact_event(store, target.event_id, by="dpo@x", reason="REQ-7 leaked email")
    assert report.rewritten and report.sequence == 1 and report.type == "note.added"
    assert report.payload_sha256 == hashlib.sha256(target.payload).hexdigest()
    stored = await store.get_event(target.event_id)
    assert stored is not None and stored.content_type == REDACTED
    assert (stored.position, stored.sequence, stored.type) == (
        target.position,
        target.sequence,
        target.type,
    )
    assert SECRET.encode() not in stored.payload
    assert stored.json()["$redacted"]["reason"] == "REQ-7 leaked email"
    assert await store.load_snapshot(target.stream) is None
    again = await redact_event(store, target.event_id, by="other", reason="again")
    assert not again.rewritten and again.audit_event_id == report.audit_event_id

    audits = [e async for e in store.read_all(types=[REDACTED_EVENT])]
    assert len(audits) == 1 and SECRET not in audits[0].payload.decode()
    assert audits[0].json()["by"] == "dpo@x" and audits[0].json()["event_id"] == target.event_id

    registry = _registry()
    decoded = registry.decode(stored)
    assert isinstance(decoded, Redacted) and decoded.marker["by"] == "dpo@x"
    await redact_event(store, old.event_id, by="dpo@x", reason="old rename")
    redacted_old = await store.get_event(old.event_id)
    assert redacted_old is not None
    assert registry.upcast(redacted_old) is redacted_old
    assert isinstance(registry.decode(redacted_old), Redacted)

    decider = chronik.Decider("note", lambda c, s: [], _evolve, list)
    loaded = await Repository(store, registry).load(decider, target.stream, use_cache=False)
    assert loaded.state == ["hello"] and loaded.version == 2
    with pytest.raises(chronik.ValidationError):
        await redact_event(store, audits[0].event_id, by="x", reason="hide the audit")
    with pytest.raises(chronik.NotFound):
        await redact_event(store, "no-such-event", by="x", reason="y")
    with pytest.raises(chronik.ValidationError):
        await redact_event(store, target.event_id, by="x", reason="")


async def test_redact_in_memory() -> None:
    """Memory: the event is replaced in place, audited, its snapshot dropped, decoding safe."""
    async with chronik.open_store("memory://") as store:
        await _redact_and_check(store)


async def test_redact_sqlite_leaves_no_old_bytes(tmp_path: Path) -> None:
    """SQLite: after redacting and compacting, the file holds no byte of the old payload and
    verify finds 0 hits of it."""
    db = tmp_path / "notes.db"
    async with chronik.open_store(f"sqlite:///{db}") as store:
        await _redact_and_check(store)
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    compact_sqlite(db)
    assert SECRET.encode() not in db.read_bytes()
    async with chronik.open_store(f"sqlite:///{db}") as store:
        report = await verify_subject(store, "n-1", canaries=[SECRET], sqlite_file=db)
    assert report.hits == [], report


async def test_redact_postgres(postgres_url: str) -> None:
    """PostgreSQL: the same rewrite, audit and decoding."""
    async with chronik.open_store(postgres_url) as store:
        await _redact_and_check(store)
        report = await verify_subject(store, "n-1", canaries=[SECRET])
        assert report.hits == [], report


async def test_redact_unsupported_store_is_typed(tmp_path: Path) -> None:
    """A store without in-place rewrites (LMDB) raises NotSupported naming the operation,
    and nothing is audited."""
    async with chronik.open_store(f"lmdb:///{tmp_path}/notes") as store:
        events = await _fill(store)
        with pytest.raises(chronik.NotSupported, match="rewriting an event"):
            await redact_event(store, events[1].event_id, by="dpo", reason="leak")
        assert [e async for e in store.read_all(types=[REDACTED_EVENT])] == []
        with pytest.raises(chronik.NotSupported, match="dropping a snapshot"):
            await store.drop_snapshot(events[1].stream)


def test_cli_events_redact(tmp_path: Path) -> None:
    """``chronik events redact ID --reason`` rewrites, audits and compacts a SQLite file."""
    import asyncio

    db = tmp_path / "cli.db"
    url = f"sqlite:///{db}"

    async def fill() -> str:
        async with chronik.open_store(url) as store:
            return (await _fill(store))[1].event_id

    event_id = asyncio.run(fill())
    runner = CliRunner()
    args = ["events", "redact", event_id, "--reason", "leak", "--store", url, "--yes"]
    result = runner.invoke(_build(), args)
    assert result.exit_code == 0, result.output
    assert "redacted" in result.output and "compacted" in result.output
    assert SECRET.encode() not in db.read_bytes()
    missing = runner.invoke(
        _build(), ["events", "redact", "nope", "--reason", "r", "--store", url, "-y"]
    )
    assert missing.exit_code == 1 and "no event" in missing.output
