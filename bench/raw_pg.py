"""The raw asyncpg baselines: the least work that stores and reads the same rows.

Appends are one INSERT each in autocommit (sequence numbers kept by the client, no expectation
check, no stream row), through one multi-row ``VALUES`` statement per batch size, prepared once
per connection before timing (``conn.prepare``, reused). Reads page through chronik's own events
table with prepared statements, selecting the columns chronik reads for a RecordedEvent, and
decode each payload to a dict with ``bench.raw.loads`` (orjson or msgspec, whichever decodes
faster on this machine).
"""

from __future__ import annotations

import os
import time
from typing import Any

import asyncpg
import orjson

from bench.raw import LOADS_NAME, loads

__all__ = ["LOADS_NAME", "Reader", "Writer", "connect"]

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
_INTO = (
    'INSERT INTO "{s}".raw_events (stream_id, sequence, event_id, type, schema_version, '
    "payload, metadata, content_type, recorded_at) "
)
# The columns chronik reads for a RecordedEvent (chronik.store.postgres.read.COLS).
COLS = (
    "xid, id, stream_id, sequence, event_id, type, schema_version, payload, metadata, "
    "content_type, recorded_at"
)
PAGE = 1000


async def connect(dsn: str, schema: str) -> asyncpg.Connection:
    """A connection with the raw table created in ``schema``."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(TABLE.replace("{s}", f'"{schema}"'))
    return conn


class Writer:
    """One connection's insert statements, one per batch size, prepared before timing."""

    def __init__(self, conn: asyncpg.Connection, schema: str) -> None:
        self.conn = conn
        self.into = _INTO.replace("{s}", schema)
        self.statements: dict[int, Any] = {}

    @classmethod
    async def prepare(cls, conn: asyncpg.Connection, schema: str, *sizes: int) -> Writer:
        """A writer with the inserts of ``sizes`` events (default 1 and 10) prepared."""
        writer = cls(conn, schema)
        for n in sizes or (1, 10):
            await writer.statement(n)
        return writer

    async def statement(self, n: int) -> Any:
        """The prepared multi-row ``VALUES`` insert of ``n`` events (the fastest of one-row
        executemany, unnest arrays and multi-row VALUES for batches of 10 here)."""
        stmt = self.statements.get(n)
        if stmt is None:
            rows = ", ".join(
                f"($1, ${3 * k + 2}, ${3 * k + 3}, 'bench.event', 1, ${3 * k + 4}, NULL, NULL, "
                f"${3 * n + 2})"
                for k in range(n)
            )
            stmt = self.statements[n] = await self.conn.prepare(self.into + "VALUES " + rows)
        return stmt

    async def append(self, stream_id: int, first: int, payloads: list[Any]) -> None:
        """One append: one INSERT of len(payloads) rows (orjson-encoded), autocommit."""
        stmt = self.statements.get(len(payloads)) or await self.statement(len(payloads))
        args: list[Any] = [stream_id]
        for k, p in enumerate(payloads):
            args += (first + k, os.urandom(16).hex(), orjson.dumps(p))
        await stmt.fetch(*args, time.time_ns() // 1000)


class Reader:
    """chronik's stream and read-all queries, prepared before any timing starts."""

    def __init__(self, stream_id: Any, stream: Any, every: Any) -> None:
        self.stream_id = stream_id
        self.stream = stream
        self.every = every

    @classmethod
    async def prepare(cls, conn: asyncpg.Connection, schema: str) -> Reader:
        """Prepare the stream-id lookup, the stream page and the read-all page on ``conn``."""
        s = f'"{schema}"'
        return cls(
            await conn.prepare(
                f"SELECT id FROM {s}.streams WHERE tenant = '' AND domain = 'bench' "
                "AND aggregate_id = $1"
            ),
            await conn.prepare(
                f"SELECT {COLS} FROM {s}.events WHERE stream_id = $1 AND sequence >= $2 "
                "ORDER BY sequence LIMIT $3"
            ),
            await conn.prepare(
                f"SELECT {COLS} FROM {s}.events WHERE (xid, id) > ($1, $2) "
                "ORDER BY xid, id LIMIT $3"
            ),
        )

    async def read_stream(self, aggregate_id: str) -> int:
        """Look the stream up and read it in pages of 1,000 (as chronik does), decoding each
        payload to a dict with ``bench.raw.loads``; returns the count."""
        sid = await self.stream_id.fetchval(aggregate_id)
        count, cursor, decode = 0, 0, loads
        while True:
            rows = await self.stream.fetch(sid, cursor, PAGE)
            for r in rows:
                decode(r[7])
            count += len(rows)
            if len(rows) < PAGE:
                return count
            cursor = rows[-1][3] + 1

    async def read_all(self) -> int:
        """Read all events in pages of 1,000 by (xid, id), decoding each payload to a dict
        with ``bench.raw.loads``; returns the count."""
        count, commit, index, decode = 0, 0, 0, loads
        while True:
            rows = await self.every.fetch(commit, index, PAGE)
            if not rows:
                return count
            for r in rows:
                decode(r[7])
            count += len(rows)
            commit, index = rows[-1][0], rows[-1][1]


STREAMS = (
    "CREATE TABLE IF NOT EXISTS {s}.raw_streams (id bigint PRIMARY KEY, version bigint NOT NULL)"
)


class ExpectationFailed(Exception):
    """A checked append whose stream was not at the expected version (nothing written)."""


class CheckedWriter(Writer):
    """The same appends with chronik's optimistic concurrency check, the fastest way a raw
    client does it: one prepared statement per call, autocommit, whose CTE moves the stream's
    version only if it is the expected one (a first append inserts the stream's row, refused
    if it exists) and inserts the events only if it moved."""

    def __init__(self, conn: asyncpg.Connection, schema: str) -> None:
        super().__init__(conn, schema)
        self.schema = f'"{schema}"'
        self.checked_statements: dict[tuple[int, bool], Any] = {}

    @classmethod
    async def prepare(cls, conn: asyncpg.Connection, schema: str, *sizes: int) -> CheckedWriter:
        """A writer with both forms (new stream, existing stream) of ``sizes`` prepared."""
        await conn.execute(STREAMS.replace("{s}", f'"{schema}"'))
        writer = cls(conn, schema)
        for n in sizes or (1, 10):
            await writer.checked(n, True)
            await writer.checked(n, False)
        return writer

    async def checked(self, n: int, new: bool) -> Any:
        """The prepared statement of ``n`` events: $1 the stream, $2 its version before (-1
        for a new stream), then (sequence, event id, payload) per event, then the time."""
        stmt = self.checked_statements.get((n, new))
        if stmt is None:
            s = self.schema
            if new:
                head = (
                    f"WITH s AS (INSERT INTO {s}.raw_streams (id, version) "
                    f"VALUES ($1, $2::bigint + {n}) ON CONFLICT (id) DO NOTHING RETURNING id) "
                )
            else:
                head = (
                    f"WITH s AS (UPDATE {s}.raw_streams SET version = version + {n} "
                    "WHERE id = $1 AND version = $2 RETURNING id) "
                )
            rows = ", ".join(
                f"(${3 * k + 3}::bigint, ${3 * k + 4}::text, ${3 * k + 5}::bytea)" for k in range(n)
            )
            stmt = self.checked_statements[(n, new)] = await self.conn.prepare(
                head
                + self.into
                + f"SELECT s.id, v.q, v.e, 'bench.event', 1, v.p, NULL, NULL, ${3 * n + 3} "
                + f"FROM s, (VALUES {rows}) AS v(q, e, p)"
            )
        return stmt

    async def append(self, stream_id: int, first: int, payloads: list[Any]) -> None:
        """One checked append of events ``first``, ``first + 1``, ... (``first`` 0: a new
        stream); ExpectationFailed when the stream is not at ``first - 1``."""
        n = len(payloads)
        stmt = self.checked_statements.get((n, first == 0)) or await self.checked(n, first == 0)
        args: list[Any] = [stream_id, first - 1]
        for k, p in enumerate(payloads):
            args += (first + k, os.urandom(16).hex(), orjson.dumps(p))
        await stmt.fetch(*args, time.time_ns() // 1000)
        if stmt.get_statusmsg() != f"INSERT 0 {n}":
            raise ExpectationFailed(f"stream {stream_id} is not at version {first - 1}")
