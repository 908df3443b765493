"""Encryption and compression at rest: sealed payloads on memory, SQLite and PostgreSQL (the
raw database file holds no plaintext), old plain rows still read, keys rotate by id, a
missing key is a typed error, export / import carry sealed rows, folds and personal fields
work through it, and the ``codec:`` config section builds it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

import chronik
from chronik.lifecycle.export import export_events
from chronik.lifecycle.importer import import_events
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.personal import FORGOTTEN, KeyRing
from chronik.personal.at_rest import SEALED, AtRest, AtRestConfig, AtRestKeys
from chronik.repository import Repository
from chronik.server.config import Config, build_app

SECRET = "canary-atrest-0c5d-" + "x" * 40  # long enough for zlib to shrink it


class Noted(msgspec.Struct):
    """A note whose whole payload is sealed at rest."""

    note_id: str
    text: str


class Signed(msgspec.Struct):
    """A signature with a personal email (crypto-shredding inside a sealed payload)."""

    person: str
    email: str


def _registry(at_rest: AtRest | None) -> chronik.EventRegistry:
    """Noted and Signed, sealed with ``at_rest``."""
    registry = chronik.EventRegistry()
    registry.register(Noted, "note.added")
    registry.register(Signed, "note.signed", personal={"email": "person"})
    registry.at_rest = at_rest
    return registry


def _keys(tmp_path: Path, *ids: str) -> Path:
    """A key file with a new key per id (the first is current)."""
    path = tmp_path / ("keys-" + "-".join(ids))
    path.write_text("# at-rest keys\n" + "\n".join(AtRestKeys.new_line(i) for i in ids) + "\n")
    return path


def _evolve(state: list[str], event: object) -> list[str]:
    """A decider fold over the notes' texts."""
    return [*state, event.text] if isinstance(event, Noted) else state


async def _roundtrip(store: chronik.EventStore, tmp_path: Path) -> None:
    """A plain row, then sealed rows under key k1, then under k2 (rotation): all decode, the
    fold reads them, the stored bytes hold no plaintext; without k1 the old rows fail typed."""
    stream = chronik.StreamId("note", "n-1")
    plain = _registry(None)
    await store.append(stream, [plain.to_event_data(Noted("n-1", "plain " + SECRET))])
    k1 = AtRestKeys.from_file(tmp_path / "keys-k1")
    first = _registry(AtRest("zlib", k1))
    await store.append(stream, [first.to_event_data(Noted("n-1", "one " + SECRET))])
    rotated = AtRestKeys.from_file(tmp_path / "rotated")
    second = _registry(AtRest("zlib", rotated))
    await store.append(stream, [second.to_event_data(Noted("n-1", "two " + SECRET))])

    events = [e async for e in store.read_stream(stream)]
    assert [e.content_type for e in events] == [chronik.messages.JSON, SEALED, SEALED]
    assert all(SECRET.encode() not in e.payload for e in events[1:])
    assert events[1].payload[3:5] == b"k1" and events[2].payload[3:5] == b"k2"
    texts = [second.decode(e).text for e in events]
    assert texts == ["plain " + SECRET, "one " + SECRET, "two " + SECRET]
    decider = chronik.Decider("note", lambda c, s: [], _evolve, list)
    loaded = await Repository(store, second).load(decider, stream, use_cache=False)
    assert loaded.state == texts and loaded.version == 2

    only_k2 = AtRestKeys({"k2": rotated.keys["k2"]}, "k2")
    with pytest.raises(chronik.DeserializationError, match="not in the key file"):
        _registry(AtRest("zlib", only_k2)).decode(events[1])
    with pytest.raises(chronik.DeserializationError):
        _registry(None).decode(events[2])  # no keys at all


def _rotated(tmp_path: Path) -> None:
    """The key file after rotation: a new k2 first, the old k1 kept."""
    k1 = (tmp_path / "keys-k1").read_text().splitlines()[1]
    (tmp_path / "rotated").write_text(AtRestKeys.new_line("k2") + "\n" + k1 + "\n")


async def test_memory_store(tmp_path: Path) -> None:
    """Memory: plain, sealed and rotated rows all read; missing keys are typed."""
    _keys(tmp_path, "k1")
    _rotated(tmp_path)
    async with chronik.open_store("memory://") as store:
        await _roundtrip(store, tmp_path)


async def test_sqlite_raw_file_has_no_plaintext(tmp_path: Path) -> None:
    """SQLite: after a checkpoint the database file holds the plain row's text only."""
    _keys(tmp_path, "k1")
    _rotated(tmp_path)
    db = tmp_path / "rest.db"
    async with chronik.open_store(f"sqlite:///{db}") as store:
        await _roundtrip(store, tmp_path)
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    raw = db.read_bytes()
    assert raw.count(SECRET.encode()) == 1 and b"plain " + SECRET.encode() in raw


async def test_postgres(postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL: the same, and the stored bytea holds no plaintext."""
    _keys(tmp_path, "k1")
    _rotated(tmp_path)
    async with chronik.open_store(postgres_url) as store:
        await _roundtrip(store, tmp_path)
        sealed = [e async for e in store.read_all() if e.content_type == SEALED]
        assert len(sealed) == 2 and all(SECRET.encode() not in e.payload for e in sealed)


async def test_export_import_and_personal_fields(tmp_path: Path) -> None:
    """An export carries sealed rows as they are (no plaintext in the file); imported into
    another store they decode with the same keys; personal fields inside a sealed payload
    still crypto-shred."""
    keys = AtRestKeys.from_file(_keys(tmp_path, "k1"))
    export = tmp_path / "notes.jsonl"
    async with chronik.open_store(f"sqlite:///{tmp_path}/a.db") as store:
        registry = _registry(AtRest("none", keys))
        ring = KeyRing(StoreKeyStore(store))
        registry.use_keys(ring)
        signed = Signed("p-1", SECRET)
        await registry.load_keys([signed])
        stream = chronik.StreamId("note", "n-2")
        await store.append(stream, [registry.to_event_data(signed)])
        with export.open("wb") as out:
            await export_events(store, out)
        (stored,) = [e async for e in store.read_stream(stream)]
        assert (await registry.adecode(stored)).email == SECRET
        assert SECRET.encode() not in export.read_bytes() and b"$enc" not in stored.payload
        await ring.forget("p-1")
        assert registry.decode(stored).email == FORGOTTEN
    async with chronik.open_store("memory://") as copy:
        with export.open("rb") as lines:
            await import_events(copy, lines)
        (imported,) = [e async for e in copy.read_stream(chronik.StreamId("note", "n-2"))]
        assert imported.payload == stored.payload and imported.content_type == SEALED
        assert b'"$enc"' in _open(imported, keys)  # the personal field is still sealed


def _open(event: chronik.RecordedEvent, keys: AtRestKeys) -> bytes:
    """The JSON payload of a sealed event."""
    return AtRest("none", keys).open(event.type, event.payload)


def test_config_section_builds_it(tmp_path: Path) -> None:
    """``codec: {compress: zlib, encrypt: {key_file}}`` seals the app's registry; a bad
    compression or key file is a ConfigurationError naming it."""
    path = _keys(tmp_path, "main")
    config = msgspec.convert(
        {"codec": {"compress": "zlib", "encrypt": {"key_file": str(path)}}}, Config
    )
    app = build_app(config, "memory://")
    assert app.registry.at_rest is not None and app.registry.at_rest.compress == "zlib"
    with pytest.raises(chronik.ConfigurationError, match="compress"):
        AtRestConfig(compress="zstd").build()
    (tmp_path / "bad").write_text("k1 not-base64!\n")
    bad = {"compress": "none", "encrypt": {"key_file": str(tmp_path / "bad")}}
    with pytest.raises(chronik.ConfigurationError, match="line 1"):
        msgspec.convert(bad, AtRestConfig).build()
