"""The raw baselines: plain sqlite3 doing the same work as chronik on the same schema."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

import msgspec

from chronik.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION

INSERT_EVENT = (
    "INSERT INTO chronik_events (stream_id, sequence, event_id, type, schema_version, payload, "
    "metadata, content_type, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def connect(path: str) -> sqlite3.Connection:
    """A WAL, synchronous=NORMAL connection with chronik's tables and indexes."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS chronik_schema (version INTEGER NOT NULL)")
    if not conn.execute("SELECT 1 FROM chronik_schema").fetchone():
        for version in range(1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute("INSERT INTO chronik_schema VALUES (?)", (SCHEMA_VERSION,))
    return conn


def append(
    conn: sqlite3.Connection, aggregate_id: str, payloads: list[Any], expected: int | None
) -> int:
    """One append call: check the version, insert stream and events, bump the version, commit."""
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute(
        "SELECT id, version FROM chronik_streams WHERE tenant = ? AND domain = ? "
        "AND aggregate_id = ?",
        ("", "bench", aggregate_id),
    ).fetchone()
    actual = None if row is None else row[1]
    if actual != expected:
        conn.execute("ROLLBACK")
        raise RuntimeError(f"expected {expected}, found {actual}")
    if row is None:
        stream_id = conn.execute(
            "INSERT INTO chronik_streams (tenant, domain, aggregate_id, version) "
            "VALUES (?, ?, ?, -1)",
            ("", "bench", aggregate_id),
        ).lastrowid
    else:
        stream_id = row[0]
    first = 0 if actual is None else actual + 1
    now = time.time_ns() // 1000
    conn.executemany(
        INSERT_EVENT,
        [
            (
                stream_id,
                first + i,
                os.urandom(16).hex(),
                "bench.event",
                1,
                msgspec.json.encode(p),
                None,
                None,
                now,
            )
            for i, p in enumerate(payloads)
        ],
    )
    last = first + len(payloads) - 1
    conn.execute("UPDATE chronik_streams SET version = ? WHERE id = ?", (last, stream_id))
    conn.execute("COMMIT")
    return last


def read_stream(conn: sqlite3.Connection, aggregate_id: str) -> int:
    """Read one stream in pages of 1,000 and decode each payload; returns the count."""
    sid = conn.execute(
        "SELECT id FROM chronik_streams WHERE tenant = '' AND domain = 'bench' "
        "AND aggregate_id = ?",
        (aggregate_id,),
    ).fetchone()[0]
    count, cursor, decode = 0, 0, msgspec.json.decode
    while True:
        rows = conn.execute(
            "SELECT position, sequence, event_id, type, payload, metadata, recorded_at "
            "FROM chronik_events WHERE stream_id = ? AND sequence >= ? "
            "ORDER BY sequence LIMIT 1000",
            (sid, cursor),
        ).fetchall()
        for r in rows:
            decoded = (r[0], r[1], r[2], r[3], decode(r[4]), r[6])
            count += decoded is not None
        if len(rows) < 1000:
            return count
        cursor = rows[-1][1] + 1


def read_all(conn: sqlite3.Connection) -> int:
    """Read every event in pages of 1,000 by position and decode each payload."""
    count, after, decode = 0, 0, msgspec.json.decode
    while True:
        rows = conn.execute(
            "SELECT position, stream_id, sequence, event_id, type, payload, metadata, "
            "recorded_at FROM chronik_events WHERE position > ? ORDER BY position LIMIT 1000",
            (after,),
        ).fetchall()
        if not rows:
            return count
        for r in rows:
            decoded = (r[0], r[1], r[2], r[3], r[4], decode(r[5]), r[7])
            count += decoded is not None
        after = rows[-1][0]
