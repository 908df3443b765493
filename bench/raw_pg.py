"""The raw asyncpg baselines: the least work that stores and reads the same rows.

Appends are one INSERT each in autocommit (sequence numbers kept by the client, no expectation
check, no stream row); reads page through chronik's own events table and decode each payload.
"""

from __future__ import annotations

import os
import time
from typing import Any

import asyncpg
import msgspec

TABLE = """CREATE TABLE IF NOT EXISTS {s}.raw_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id bigint NOT NULL,
    sequence bigint NOT NULL,
    event_id text NOT NULL UNIQUE,
    type text NOT NULL,
    schema_version integer NOT NULL,
    payload bytea NOT NULL,
    metadata bytea,
    content_type text,
    recorded_at bigint NOT NULL,
    UNIQUE (stream_id, sequence))"""


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    """A connection with the raw table created in ``schema``."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(TABLE.replace("{s}", f'"{schema}"'))
    return conn


def insert_sql(schema: str) -> str:
    """One statement inserting a batch of events (arrays, one element per event)."""
    return (
        f'INSERT INTO "{schema}".raw_events (stream_id, sequence, event_id, type, '
        "schema_version, payload, metadata, content_type, recorded_at) "
        "SELECT $1, $2 + o - 1, e, 'bench.event', 1, p, NULL, NULL, $5 "
        "FROM unnest($3::text[], $4::bytea[]) WITH ORDINALITY AS u(e, p, o)"
    )


async def append(
    conn: asyncpg.Connection, sql: str, stream_id: int, first: int, payloads: list[Any]
) -> None:
    """One append: one INSERT of len(payloads) rows, autocommit."""
    await conn.execute(
        sql,
        stream_id,
        first,
        [os.urandom(16).hex() for _ in payloads],
        [msgspec.json.encode(p) for p in payloads],
        time.time_ns() // 1000,
    )


async def read_stream(conn: asyncpg.Connection, schema: str, stream_id: int) -> int:
    """Read one of chronik's streams in pages of 1,000, decoding each payload."""
    sql = (
        f'SELECT xid, id, sequence, event_id, type, payload, metadata, recorded_at FROM "{schema}"'
        ".events WHERE stream_id = $1 AND sequence >= $2 ORDER BY sequence LIMIT 1000"
    )
    count, cursor, decode = 0, 0, msgspec.json.decode
    while True:
        rows = await conn.fetch(sql, stream_id, cursor)
        for r in rows:
            decoded = (r[0], r[1], r[2], r[3], r[4], decode(r[5]), r[7])
            count += decoded is not None
        if len(rows) < 1000:
            return count
        cursor = rows[-1][2] + 1


async def read_all(conn: asyncpg.Connection, schema: str) -> int:
    """Read all of chronik's events in pages of 1,000 by (xid, id), decoding each payload."""
    sql = (
        f"SELECT xid, id, stream_id, sequence, event_id, type, payload, metadata, recorded_at "
        f'FROM "{schema}".events WHERE (xid, id) > ($1, $2) ORDER BY xid, id LIMIT 1000'
    )
    count, after, decode = 0, (0, 0), msgspec.json.decode
    while True:
        rows = await conn.fetch(sql, *after)
        if not rows:
            return count
        for r in rows:
            decoded = (r[0], r[1], r[2], r[3], r[4], r[5], decode(r[6]), r[8])
            count += decoded is not None
        after = (rows[-1][0], rows[-1][1])
