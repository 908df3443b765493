"""System tables come from versioned migrations: old databases are upgraded on open, and the
hot paths (recording an outbox message, a lease, a deadline round) run no DDL."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import asyncpg
import msgspec
import pytest

import chronik
from chronik.outbox import OutboxAdmin
from chronik.projections import leases
from chronik.store.postgres import schema as postgres_schema
from chronik.store.postgres.schema import quote_schema, split_url
from chronik.store.sqlite import schema as sqlite_schema
from chronik.store.tables import OUTBOX, SYSTEM_TABLES, TableSpec
from chronik.transports.message import Message

_PG_TYPES = {"INTEGER": "bigint", "TEXT": "text", "REAL": "double precision", "BLOB": "bytea"}
# the outbox table as chronik created it at run time before migration 4 / 2
_OLD_OUTBOX = (
    "CREATE TABLE IF NOT EXISTS {s}outbox_messages (id TEXT, kind TEXT, topic TEXT, body BLOB, "
    "headers TEXT, msg_key TEXT, state TEXT, attempts INTEGER, next_attempt_us INTEGER, "
    "last_error TEXT, created_us INTEGER, sent_us INTEGER, PRIMARY KEY (id))"
)
_OLD_ROW = (
    "INSERT INTO {s}outbox_messages VALUES ('old-1', 'publish', 'shop.registered', {body}, "
    "'{{}}', NULL, 'pending', 0, 0, NULL, 1, NULL)"
)


def _sqlite_columns(path: Path, table: str) -> tuple[list[tuple[str, str]], list[str]]:
    with sqlite3.connect(path) as conn:
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()
    pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
    return [(r[1], r[2]) for r in info], pk


async def _pg_columns(
    conn: asyncpg.Connection, schema: str, table: str
) -> tuple[list[tuple[str, str]], list[str]]:
    cols = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        schema,
        table,
    )
    pk = await conn.fetch(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary "
        "ORDER BY array_position(i.indkey, a.attnum)",
        f"{quote_schema(schema)}.{table}",
    )
    return [(r[0], r[1]) for r in cols], [r[0] for r in pk]


def _want(
    spec: TableSpec, types: dict[str, str] | None = None
) -> tuple[list[tuple[str, str]], list[str]]:
    return [(c, (types or {}).get(t, t)) for c, t in spec.columns], list(spec.primary_key)


async def test_sqlite_database_at_the_previous_version_is_migrated_on_open(tmp_path: Path) -> None:
    """A SQLite file at schema version 3 (with an outbox table made at run time, holding a
    message) opens at the current version with every system table, the message kept."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE chronik_schema (version INTEGER NOT NULL)")
        for version in (1, 2, 3):
            for statement in sqlite_schema.MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO chronik_schema VALUES (?)", (version,))
        conn.execute(_OLD_OUTBOX.format(s=""))
        conn.execute(_OLD_ROW.format(s="", body="x'7b7d'"))
    async with chronik.open_store(f"sqlite:///{path}") as store:
        rows = await OutboxAdmin(store).messages()
        assert [(r["id"], r["body"]) for r in rows] == [("old-1", "{}")]
        assert await leases.acquire(store, "outbox", "me", 5.0) == 1
    with sqlite3.connect(path) as conn:
        version = conn.execute("SELECT max(version) FROM chronik_schema").fetchone()[0]
    assert version == sqlite_schema.SCHEMA_VERSION == 9
    for spec in SYSTEM_TABLES:
        assert _sqlite_columns(path, spec.name) == _want(spec), spec.name


async def test_sqlite_events_of_schema_5_read_back_untagged_after_migration(
    tmp_path: Path,
) -> None:
    """A SQLite file at schema version 5 holding events (as chronik wrote them then) migrates
    in place on open: its events read back with no tags from every read, a tag query finds
    none of them, and tagged events appended afterwards are indexed."""
    path = tmp_path / "v5.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE chronik_schema (version INTEGER NOT NULL)")
        for version in range(1, 6):
            for statement in sqlite_schema.MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO chronik_schema VALUES (?)", (version,))
        conn.execute(
            "INSERT INTO chronik_streams (id, tenant, domain, aggregate_id, version) "
            "VALUES (1, '', 'course', 'c1', 1)"
        )
        for seq, (eid, etype) in enumerate([("e-0", "course.defined"), ("e-1", "course.renamed")]):
            conn.execute(
                "INSERT INTO chronik_events (stream_id, sequence, event_id, type, "
                "schema_version, payload, metadata, content_type, recorded_at) "
                "VALUES (1, ?, ?, ?, 1, ?, ?, NULL, 1)",
                (seq, eid, etype, b'{"n": %d}' % seq, b'{"correlation_id": "c"}'),
            )
    stream = chronik.StreamId("course", "c1")
    async with chronik.open_store(f"sqlite:///{path}") as store:
        old = [e async for e in store.read_stream(stream)]
        assert [(e.event_id, e.tags) for e in old] == [("e-0", ()), ("e-1", ())]
        assert [e.tags async for e in store.read_all()] == [(), ()]
        got = await store.get_event("e-1")
        assert got is not None and got.tags == () and got.metadata.correlation_id == "c"
        assert [e.event_id async for e in store.read_query(chronik.Query.all())] == ["e-0", "e-1"]
        assert [e async for e in store.read_query(chronik.Query.of(tags=["course:c1"]))] == []
        await store.append(
            stream, [chronik.EventData("course.closed", tags=["course:c1"])], expected=1
        )
        tagged = [e async for e in store.read_query(chronik.Query.of(tags=["course:c1"]))]
        assert [(e.sequence, e.tags) for e in tagged] == [(2, ("course:c1",))]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT max(version) FROM chronik_schema").fetchone()[0] == 9
        assert conn.execute("SELECT tags FROM chronik_events ORDER BY position").fetchall() == [
            (None,),
            (None,),
            ("course:c1",),
        ]


async def test_postgres_schema_at_the_previous_version_is_migrated_on_open(
    postgres_url: str,
) -> None:
    """A PostgreSQL schema at version 1 (with an outbox table made at run time, holding a
    message) opens at the current version with every system table, the message kept."""
    dsn, options = split_url(postgres_url)
    schema = options["schema"]
    s = quote_schema(schema)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {s}")
        await conn.execute(
            f"CREATE TABLE {s}.schema_migrations (version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        lock_class = str(postgres_schema.lock_class(schema))
        for statement in postgres_schema.MIGRATIONS[1]:
            await conn.execute(statement.replace("{s}", s).replace("{lock_class}", lock_class))
        await conn.execute(f"INSERT INTO {s}.schema_migrations (version) VALUES (1)")
        old = _OLD_OUTBOX.replace("INTEGER", "bigint").replace("BLOB", "bytea")
        await conn.execute(old.format(s=f"{s}."))
        await conn.execute(_OLD_ROW.format(s=f"{s}.", body="'\\x7b7d'::bytea"))
        async with chronik.open_store(postgres_url) as store:
            rows = await OutboxAdmin(store).messages()
            assert [(r["id"], r["body"]) for r in rows] == [("old-1", "{}")]
            assert await leases.acquire(store, "outbox", "me", 5.0) == 1
        version = await conn.fetchval(f"SELECT max(version) FROM {s}.schema_migrations")
        assert version == postgres_schema.SCHEMA_VERSION == 12
        for spec in SYSTEM_TABLES:
            assert await _pg_columns(conn, schema, spec.name) == _want(spec, _PG_TYPES), spec.name
    finally:
        await conn.close()


class Registered(msgspec.Struct):
    """The event of the concurrent commands below."""

    n: int


def _app(url: str) -> chronik.Chronik:
    registry = chronik.EventRegistry()
    registry.event()(Registered)
    app = chronik.Chronik(store=url, registry=registry)
    app.add_decider(
        "customer",
        lambda command, state: Registered(command.payload["n"]),
        lambda state, event: state,
        dict,
    )
    app.add_outbox(
        lambda event, data, stream: Message(
            topic="customer.registered", id=data.event_id, body=msgspec.json.encode(event)
        )
    )
    return app


def _command(n: int) -> chronik.Command:
    return chronik.Command(
        domain="customer", aggregate_id=f"c{n}", type="Register", payload={"n": n}
    )


@pytest.mark.timeout(60)
async def test_concurrent_commands_recording_outbox_rows_on_a_fresh_schema(
    postgres_url: str,
) -> None:
    """16 concurrent commands that record outbox messages, on a fresh PostgreSQL schema, all
    succeed (no CREATE TABLE/INDEX races in their units of work)."""
    async with _app(postgres_url) as app:
        results = await asyncio.gather(
            *(app.dispatch(_command(n)) for n in range(16)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == []
        assert len(await OutboxAdmin(app.store).messages()) == 16


@pytest.mark.timeout(60)
async def test_a_row_lock_on_the_outbox_does_not_delay_recording(postgres_url: str) -> None:
    """A transaction holding a row lock on the outbox table does not hold back a command that
    records another message (no SHARE lock taken by DDL): it takes well under a second."""
    async with _app(postgres_url) as app:
        await app.dispatch(_command(0))
        (first,) = await OutboxAdmin(app.store).messages()
        dsn, options = split_url(postgres_url)
        holder = await asyncpg.connect(dsn)
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute(
                f"UPDATE {quote_schema(options['schema'])}.{OUTBOX.name} "
                "SET attempts = attempts WHERE id = $1",
                first["id"],
            )
            started = time.monotonic()
            await asyncio.wait_for(app.dispatch(_command(1)), 5)
            took = time.monotonic() - started
            await tx.rollback()
        finally:
            await holder.close()
        print(f"\noutbox record under a held row lock: {took * 1000:.1f} ms")
        assert took < 1.0
        assert len(await OutboxAdmin(app.store).messages()) == 2


async def test_postgres_transport_tables_come_from_versioned_migrations(postgres_url: str) -> None:
    """The PostgreSQL transport creates its tables through its own versioned migrations (under
    the store's migrator and lock) and adopts the tables an older chronik created on open."""
    from chronik.transports import open_transport
    from chronik.transports import postgres as transport_pg

    dsn, options = split_url(postgres_url)
    s = quote_schema(options["schema"])
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {s}")
        await conn.execute(
            f"CREATE TABLE {s}.transport_groups (topic text NOT NULL, grp text NOT NULL, "
            "PRIMARY KEY (topic, grp))"
        )
        await conn.execute(f"INSERT INTO {s}.transport_groups VALUES ('old.topic', 'g')")
        for _ in range(2):  # a second open finds the schema up to date
            async with open_transport(postgres_url):
                pass
        latest = max(transport_pg.MIGRATIONS)
        versions = await conn.fetch(f"SELECT version FROM {s}.{transport_pg.MIGRATIONS_TABLE}")
        assert [r[0] for r in versions] == list(range(1, latest + 1))
        kept = await conn.fetch(f"SELECT topic, grp FROM {s}.transport_groups")
        assert [tuple(r) for r in kept] == [("old.topic", "g")]
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
            options["schema"],
        )
        assert {r[0] for r in tables} >= {
            "transport_groups",
            "transport_messages",
            "transport_ids",
            "transport_inbox",
        }
    finally:
        await conn.close()
