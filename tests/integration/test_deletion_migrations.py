"""Databases made before deletion existed (SQLite schema 6, PostgreSQL schema 5) migrate in
place on open: their streams keep every event, and soft / hard deletes work on them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

import chronik
from chronik.errors import StreamDeleted
from chronik.store.postgres import schema as postgres_schema
from chronik.store.postgres.schema import quote_schema, split_url
from chronik.store.sqlite import schema as sqlite_schema

STREAM = chronik.StreamId("course", "c1")


async def _exercise(store: chronik.EventStore) -> None:
    """The old stream reads whole, then is soft-deleted, restarted, then hard-deleted."""
    assert [e.event_id async for e in store.read_stream(STREAM)] == ["e-0", "e-1"]
    assert await store.stream_version(STREAM) == 1
    deleted = await store.delete_stream(STREAM, expected=1)
    assert deleted.first_sequence == 2
    assert [e async for e in store.read_stream(STREAM)] == []
    restarted = await store.append(STREAM, [chronik.EventData("x")], chronik.NO_STREAM)
    assert restarted.first_sequence == 3
    await store.delete_stream(STREAM, hard=True)
    with pytest.raises(StreamDeleted):
        await store.append(STREAM, [chronik.EventData("course.defined")])
    assert len([e async for e in store.read_all()]) == 5


async def test_sqlite_schema_6_migrates_and_deletes(tmp_path: Path) -> None:
    """A SQLite file at schema 6 holding a stream opens at schema 7; deletes then work."""
    assert sqlite_schema.SCHEMA_VERSION >= 7
    path = tmp_path / "v6.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE chronik_schema (version INTEGER NOT NULL)")
        for version in range(1, 7):
            for statement in sqlite_schema.MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO chronik_schema VALUES (?)", (version,))
        conn.execute(
            "INSERT INTO chronik_streams (id, tenant, domain, aggregate_id, version) "
            "VALUES (1, '', 'course', 'c1', 1)"
        )
        for seq in (0, 1):
            conn.execute(
                "INSERT INTO chronik_events (stream_id, sequence, event_id, type, "
                "schema_version, payload, metadata, content_type, recorded_at) "
                "VALUES (1, ?, ?, 'course.defined', 1, ?, NULL, NULL, 1)",
                (seq, f"e-{seq}", b"{}"),
            )
    async with chronik.open_store(f"sqlite:///{path}") as store:
        await _exercise(store)
    with sqlite3.connect(path) as conn:
        latest = conn.execute("SELECT max(version) FROM chronik_schema").fetchone()[0]
        assert latest == sqlite_schema.SCHEMA_VERSION
        row = conn.execute("SELECT version, truncate_before, tombstone FROM chronik_streams")
        assert row.fetchone() == (4, 5, 1)


async def test_postgres_schema_5_migrates_and_deletes(postgres_url: str) -> None:
    """A PostgreSQL schema at version 5 whose stream was written by the old append function
    opens at version 6 (new columns, new functions); deletes then work."""
    assert postgres_schema.SCHEMA_VERSION >= 6
    dsn, options = split_url(postgres_url)
    schema = options["schema"]
    s = quote_schema(schema)
    old = {v: m for v, m in postgres_schema.MIGRATIONS.items() if v <= 5}
    conn = await asyncpg.connect(dsn)
    try:
        assert await postgres_schema.migrate(conn, schema, old) == (0, 5)
        for n in (0, 1):
            status = await conn.fetchval(
                f"SELECT o_status FROM {s}.append_event('', 'course', 'c1', -1, $1, "
                "'course.defined', 1, '\\x7b7d'::bytea, NULL, NULL, NULL, 1)",
                f"e-{n}",
            )
            assert status == 0
        async with chronik.open_store(postgres_url) as store:
            await _exercise(store)
        latest = await conn.fetchval(f"SELECT max(version) FROM {s}.schema_migrations")
        assert latest == postgres_schema.SCHEMA_VERSION
        row = await conn.fetchrow(f"SELECT version, truncate_before, tombstone FROM {s}.streams")
        assert tuple(row) == (4, 5, True)
    finally:
        await conn.close()
