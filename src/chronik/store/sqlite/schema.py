"""The SQLite store's schema, its migrations, and its URL."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from chronik.errors import ConfigurationError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "options_from_url", "path_from_url"]

SCHEMA_VERSION: Final = 9
MIGRATIONS: Final[dict[int, list[str]]] = {
    1: [
        """CREATE TABLE chronik_streams (
            id INTEGER PRIMARY KEY,
            tenant TEXT NOT NULL,
            domain TEXT NOT NULL,
            aggregate_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            UNIQUE (tenant, domain, aggregate_id))""",
        """CREATE TABLE chronik_events (
            position INTEGER PRIMARY KEY,
            stream_id INTEGER NOT NULL,
            sequence INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            type TEXT NOT NULL,
            schema_version INTEGER NOT NULL,
            payload BLOB NOT NULL,
            metadata BLOB,
            content_type TEXT,
            recorded_at INTEGER NOT NULL)""",
        "CREATE UNIQUE INDEX chronik_events_stream ON chronik_events (stream_id, sequence)",
        "CREATE UNIQUE INDEX chronik_events_event_id ON chronik_events (event_id)",
    ],
    2: [
        """CREATE TABLE chronik_snapshots (
            tenant TEXT NOT NULL,
            domain TEXT NOT NULL,
            aggregate_id TEXT NOT NULL,
            sequence INTEGER NOT NULL,
            type TEXT NOT NULL,
            schema_version INTEGER NOT NULL,
            state BLOB NOT NULL,
            taken_at INTEGER NOT NULL,
            PRIMARY KEY (tenant, domain, aggregate_id))""",
        """CREATE TABLE chronik_checkpoints (
            name TEXT NOT NULL,
            partition INTEGER NOT NULL,
            commit_pos INTEGER NOT NULL,
            index_pos INTEGER NOT NULL,
            epoch INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (name, partition))""",
    ],
    3: [  # projections: status, requests, dead letters (chronik.projections.bookkeeping)
        """CREATE TABLE IF NOT EXISTS chronik_projections (
            name TEXT NOT NULL,
            version INTEGER,
            generation INTEGER,
            building INTEGER,
            building_version INTEGER,
            state TEXT,
            position TEXT,
            build_position TEXT,
            head TEXT,
            lag_events INTEGER,
            lag_seconds REAL,
            events_per_s REAL,
            processed INTEGER,
            last_error TEXT,
            heartbeat INTEGER,
            owner TEXT,
            PRIMARY KEY (name))""",
        """CREATE TABLE IF NOT EXISTS chronik_projection_requests (
            id TEXT NOT NULL,
            projection TEXT,
            action TEXT,
            arg TEXT,
            created_at INTEGER,
            PRIMARY KEY (id))""",
        """CREATE TABLE IF NOT EXISTS chronik_dead_letters (
            projection TEXT NOT NULL,
            event_id TEXT NOT NULL,
            generation INTEGER,
            position INTEGER,
            position_index INTEGER,
            stream TEXT,
            sequence INTEGER,
            type TEXT,
            error TEXT,
            attempts INTEGER,
            blocked INTEGER,
            parked_at INTEGER,
            PRIMARY KEY (projection, generation, event_id))""",
        "CREATE INDEX IF NOT EXISTS chronik_dead_letters_projection_stream "
        "ON chronik_dead_letters (projection, stream)",
    ],
    # the other system tables (chronik.store.tables.SYSTEM_TABLES), created at run time before:
    # IF NOT EXISTS keeps the ones an older chronik made (same columns, same index names)
    4: [
        """CREATE TABLE IF NOT EXISTS chronik_leases (
            name TEXT,
            partition INTEGER,
            owner TEXT,
            epoch INTEGER,
            expires_at INTEGER,
            PRIMARY KEY (name, partition))""",
        """CREATE TABLE IF NOT EXISTS chronik_projection_plans (
            name TEXT,
            generation INTEGER,
            version INTEGER,
            partitions INTEGER,
            building INTEGER,
            building_version INTEGER,
            building_partitions INTEGER,
            switching INTEGER,
            retired TEXT,
            PRIMARY KEY (name))""",
        """CREATE TABLE IF NOT EXISTS outbox_messages (
            id TEXT,
            kind TEXT,
            topic TEXT,
            body BLOB,
            headers TEXT,
            msg_key TEXT,
            state TEXT,
            attempts INTEGER,
            next_attempt_us INTEGER,
            last_error TEXT,
            created_us INTEGER,
            sent_us INTEGER,
            PRIMARY KEY (id))""",
        "CREATE INDEX IF NOT EXISTS outbox_messages__state_created_us "
        "ON outbox_messages (state, created_us)",
        """CREATE TABLE IF NOT EXISTS chronik_inbox (
            consumer TEXT,
            message_id TEXT,
            topic TEXT,
            PRIMARY KEY (consumer, message_id))""",
        """CREATE TABLE IF NOT EXISTS chronik_saga_record (
            owner TEXT,
            command_id TEXT,
            instance_id TEXT,
            event_id TEXT,
            command TEXT,
            outcome TEXT,
            detail TEXT,
            recorded_at INTEGER,
            PRIMARY KEY (owner, command_id))""",
        "CREATE INDEX IF NOT EXISTS chronik_saga_record__owner_event_id "
        "ON chronik_saga_record (owner, event_id)",
        """CREATE TABLE IF NOT EXISTS chronik_replay_marks (
            projection TEXT,
            partition INTEGER,
            generation INTEGER,
            position TEXT,
            refuse TEXT,
            PRIMARY KEY (projection, partition, generation))""",
    ],
    # leases carry the holder's version (chronik.store.leases), no longer in the partition column
    5: ["ALTER TABLE chronik_leases ADD COLUMN version INTEGER NOT NULL DEFAULT 0"],
    # DCB tags: on the event (NULL when none, else the sorted tags joined by one space; a tag
    # holds no space), and indexed by tag in the same transaction as the event
    6: [
        "ALTER TABLE chronik_events ADD COLUMN tags TEXT",
        """CREATE TABLE chronik_event_tags (
            tag TEXT NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (tag, position)) WITHOUT ROWID""",
    ],
    # deletion (chronik.store.deletion): the first sequence the stream still shows (soft
    # deletes and truncation move it; the version keeps counting) and the hard-delete tombstone;
    # retention (chronik.store.retention): the stream's max age (seconds) and max count
    7: [
        "ALTER TABLE chronik_streams ADD COLUMN truncate_before INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE chronik_streams ADD COLUMN tombstone INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE chronik_streams ADD COLUMN max_age REAL",
        "ALTER TABLE chronik_streams ADD COLUMN max_count INTEGER",
    ],
    # the archive (chronik.store.archive_ops): the hot log's low bound, every event at or
    # before it dropped once the archive sealed it
    8: [
        """CREATE TABLE chronik_archive_floor (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            position INTEGER NOT NULL)""",
    ],
    # tenants (a separate step from 8): each event carries its stream's tenant, indexed with
    # the position, so a read of one tenant (``read_all(tenant=...)``) walks that tenant's
    # events only
    9: [
        "ALTER TABLE chronik_events ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",
        "UPDATE chronik_events SET tenant = (SELECT s.tenant FROM chronik_streams s "
        "WHERE s.id = chronik_events.stream_id) "
        "WHERE stream_id IN (SELECT id FROM chronik_streams WHERE tenant <> '')",
        "CREATE INDEX chronik_events_tenant ON chronik_events (tenant, position)",
    ],
}


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION, one migration at a time, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS chronik_schema (version INTEGER NOT NULL)")
        current = conn.execute("SELECT max(version) FROM chronik_schema").fetchone()[0] or 0
        if current > SCHEMA_VERSION:
            raise ConfigurationError(
                f"the database has schema version {current}, newer than this chronik "
                f"({SCHEMA_VERSION}): upgrade chronik"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO chronik_schema (version) VALUES (?)", (version,))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def path_from_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigurationError(f"not a sqlite URL: {url!r}")
    path = parts.netloc + parts.path
    if path.startswith("/") and not parts.netloc:
        path = path[1:]  # sqlite:///rel/path -> rel/path; sqlite:////abs -> /abs
    if not path:
        raise ConfigurationError(f"{url!r} names no file: use sqlite:///path/to/events.db")
    if path == ":memory:":
        raise ConfigurationError("use memory:// for an in-memory store")
    return path


def options_from_url(url: str) -> dict[str, Any]:
    """Store options given in the URL's query string (synchronous=full, busy_timeout_ms=...)."""
    converters: dict[str, Callable[[str], Any]] = {
        "synchronous": str.lower,
        "busy_timeout_ms": int,
        "poll_interval": float,
        "max_payload_bytes": int,
        "max_append_events": int,
    }
    options: dict[str, Any] = {}
    for key, values in parse_qs(urlsplit(url).query).items():
        if key not in converters:
            raise ConfigurationError(f"unknown sqlite option {key!r} in {url!r}")
        try:
            options[key] = converters[key](values[-1])
        except ValueError:
            raise ConfigurationError(f"invalid value for {key!r} in {url!r}") from None
    return options
