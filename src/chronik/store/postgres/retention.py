"""Retention and scavenging on the PostgreSQL store (``chronik.store.retention``): a mixin of
``PostgresEventStore``.

Each write (rules, one scavenge batch) is one short transaction on a pooled connection that
first takes the stream's advisory lock (the one its writers take, ``functions.py``), so it
never races an append creating or moving the stream. Positions are ``(xid, id)`` from an
identity column, never handed out twice, so any event may go; readers skip the holes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NoReturn

import asyncpg

from chronik.errors import DuplicateEventError, StreamDeleted, ValidationError
from chronik.messages import JSON, RecordedEvent, StreamId
from chronik.store.deletion import STREAM_DELETED
from chronik.store.postgres.errors import DRIVER_ERRORS, write_error
from chronik.store.postgres.standby import read_only
from chronik.store.records import PreparedEvent
from chronik.store.retention import Retention, StreamRetention
from chronik.store.stream_start import check_start

if TYPE_CHECKING:
    from chronik.store.postgres.pool import ConnectionPool
    from chronik.store.postgres.write import Statements

__all__ = ["PostgresRetention"]

_KEY: Final = "tenant = $1 AND domain = $2 AND aggregate_id = $3"
_LOCK: Final = "SELECT pg_advisory_xact_lock($4::int, hashtext($1 || '/' || $2 || '/' || $3))"


class PostgresRetention:
    """The retention primitives of the PostgreSQL store."""

    url: str
    standby: bool
    statements: Statements
    _s: str
    _pool: ConnectionPool

    if TYPE_CHECKING:  # PostgresReader's

        async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...

        async def _get_event(self, event_id: str) -> RecordedEvent | None: ...

    def _raise(self, exc: BaseException) -> NoReturn:
        error, _ = write_error(self.url, exc)
        raise error from exc

    async def _locked(self, conn: asyncpg.Connection, stream: StreamId) -> None:
        key = (stream.tenant, stream.domain, stream.aggregate_id)
        await conn.execute(_LOCK.replace("$4::int", str(self.statements.lock_class)), *key)

    async def _set_retention(self, stream: StreamId, retention: Retention) -> None:
        if self.standby:
            raise read_only(self.url)
        s, key = self._s, (stream.tenant, stream.domain, stream.aggregate_id)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await self._locked(conn, stream)
                before = await conn.fetchval(
                    f"INSERT INTO {s}.streams AS x (tenant, domain, aggregate_id, version, "
                    "max_age, max_count, truncate_before) VALUES ($1, $2, $3, -1, $4, $5, $6) "
                    "ON CONFLICT (tenant, domain, aggregate_id) DO UPDATE SET "
                    "max_age = excluded.max_age, max_count = excluded.max_count, "
                    "truncate_before = greatest(x.truncate_before, excluded.truncate_before) "
                    "RETURNING truncate_before",
                    *key,
                    retention.max_age,
                    retention.max_count,
                    retention.truncate_before or 0,
                )
                await conn.execute(
                    f"DELETE FROM {s}.snapshots WHERE {_KEY} AND sequence < $4", *key, before
                )
        except DRIVER_ERRORS as exc:
            self._raise(exc)

    async def _start_stream_at(self, stream: StreamId, sequence: int) -> None:
        """``stream`` as scavenging leaves it (``chronik.store.stream_start``)."""
        if self.standby:
            raise read_only(self.url)
        s, key = self._s, (stream.tenant, stream.domain, stream.aggregate_id)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await self._locked(conn, stream)
                row = await conn.fetchrow(
                    f"SELECT x.version, x.tombstone, EXISTS (SELECT 1 FROM {s}.events e "
                    f"WHERE e.stream_id = x.id) FROM {s}.streams x WHERE {_KEY}",
                    *key,
                )
                state = (int(row[0]), bool(row[1]), bool(row[2])) if row else (-1, False, False)
                if check_start(stream, sequence, state):
                    await conn.execute(
                        f"INSERT INTO {s}.streams AS x (tenant, domain, aggregate_id, version, "
                        "truncate_before) VALUES ($1, $2, $3, $4, $5) "
                        "ON CONFLICT (tenant, domain, aggregate_id) DO UPDATE SET "
                        "version = excluded.version, "
                        "truncate_before = greatest(x.truncate_before, excluded.truncate_before)",
                        *key,
                        sequence - 1,
                        sequence,
                    )
                    await conn.execute(
                        f"DELETE FROM {s}.snapshots WHERE {_KEY} AND sequence < $4", *key, sequence
                    )
        except DRIVER_ERRORS as exc:
            self._raise(exc)

    async def _get_retention(self, stream: StreamId) -> Retention:
        rows = await self._fetch(
            f"SELECT max_age, max_count, truncate_before FROM {self._s}.streams WHERE {_KEY}",
            stream.tenant,
            stream.domain,
            stream.aggregate_id,
        )
        if not rows:
            return Retention()
        age, count, before = rows[0]
        return Retention(age, count, int(before) or None)

    async def _retention_page(
        self, cursor: int | None, limit: int
    ) -> tuple[list[StreamRetention], int | None]:
        s = self._s
        rows = await self._fetch(
            "SELECT x.id, x.tenant, x.domain, x.aggregate_id, x.version, x.truncate_before, "
            "x.max_age, x.max_count, x.tombstone, (SELECT min(e.sequence) FROM "
            f"{s}.events e WHERE e.stream_id = x.id) FROM {s}.streams x WHERE x.id > $1 "
            "ORDER BY x.id LIMIT $2",
            cursor or 0,
            limit,
        )
        out = [
            StreamRetention(
                StreamId(r[2], r[3], r[1]),
                int(r[4]),
                int(r[5]),
                Retention(r[6], r[7], int(r[5]) or None),
                bool(r[8]),
                int(r[9]),
            )
            for r in rows
            if r[9] is not None
        ]
        return out, (int(rows[-1][0]) if len(rows) == limit else None)

    async def _first_sequence_since(self, stream: StreamId, recorded_at_us: int) -> int | None:
        rows = await self._fetch(
            f"SELECT min(e.sequence) FROM {self._s}.events e JOIN {self._s}.streams x "
            "ON x.id = e.stream_id WHERE x.tenant = $1 AND x.domain = $2 "
            "AND x.aggregate_id = $3 AND e.recorded_at >= $4",
            stream.tenant,
            stream.domain,
            stream.aggregate_id,
            recorded_at_us,
        )
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def _scavenge_stream(
        self, stream: StreamId, before: int, limit: int, dry_run: bool
    ) -> tuple[int, int]:
        if self.standby and not dry_run:
            raise read_only(self.url)
        s, key = self._s, (stream.tenant, stream.domain, stream.aggregate_id)
        # below ``before``, not the stream's last deletion event
        pick = (
            f"SELECT e.xid, e.id, octet_length(e.payload) + coalesce(octet_length(e.metadata), 0),"
            f" e.tags FROM {s}.events e WHERE e.stream_id = $1 AND e.sequence < $2 "
            "AND e.sequence <> coalesce((SELECT max(d.sequence) FROM "
            f"{s}.events d WHERE d.stream_id = $1 AND d.sequence < $2 AND d.type = $3), -1) "
            "ORDER BY e.sequence"
        )
        try:
            async with self._pool.connection() as conn, conn.transaction():
                if not dry_run:
                    await self._locked(conn, stream)
                sid = await conn.fetchval(f"SELECT id FROM {s}.streams WHERE {_KEY}", *key)
                if sid is None:
                    return 0, 0
                if dry_run:
                    rows = await conn.fetch(pick, sid, before, STREAM_DELETED)
                    return len(rows), sum(int(r[2]) for r in rows)
                await conn.execute(
                    f"UPDATE {s}.streams SET truncate_before = greatest(truncate_before, $2) "
                    "WHERE id = $1",
                    sid,
                    before,
                )
                await conn.execute(
                    f"DELETE FROM {s}.snapshots WHERE {_KEY} AND sequence < $4", *key, before
                )
                rows = await conn.fetch(f"{pick} LIMIT $4", sid, before, STREAM_DELETED, limit)
                if rows:
                    xids, ids = [int(r[0]) for r in rows], [int(r[1]) for r in rows]
                    await conn.execute(
                        f"DELETE FROM {s}.events e USING unnest($1::bigint[], $2::bigint[]) "
                        "AS g(x, i) WHERE e.xid = g.x AND e.id = g.i",
                        xids,
                        ids,
                    )
                    tagged = [
                        (t, int(r[0]), int(r[1])) for r in rows if r[3] for t in r[3].split(" ")
                    ]
                    if tagged:
                        await conn.execute(
                            f"DELETE FROM {s}.event_tags k USING unnest($1::text[], "
                            "$2::bigint[], $3::bigint[]) AS g(t, x, i) "
                            "WHERE k.tag = g.t AND k.xid = g.x AND k.id = g.i",
                            [t[0] for t in tagged],
                            [t[1] for t in tagged],
                            [t[2] for t in tagged],
                        )
                return len(rows), sum(int(r[2]) for r in rows)
        except DRIVER_ERRORS as exc:
            self._raise(exc)

    async def _compact_stream(
        self, stream: StreamId, upto: int, event: PreparedEvent
    ) -> RecordedEvent:
        if self.standby:
            raise read_only(self.url)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await self._locked(conn, stream)
                await _compact(conn, self._s, stream, upto, event)
        except DRIVER_ERRORS as exc:
            self._raise(exc)
        stored = await self._get_event(event.event_id)
        if stored is None:  # pragma: no cover - written just now
            raise ValidationError(f"{stream} shows no event at sequence {upto}", field="upto")
        return stored


async def _compact(
    conn: asyncpg.Connection, s: str, stream: StreamId, upto: int, e: PreparedEvent
) -> None:
    """``e`` in place of the stream's event at ``upto``, the events before it hidden."""
    key = (stream.tenant, stream.domain, stream.aggregate_id)
    row = await conn.fetchrow(
        f"SELECT id, version, truncate_before, tombstone FROM {s}.streams WHERE {_KEY}", *key
    )
    if row is not None and row[3]:
        raise StreamDeleted(stream)
    content_type = None if e.content_type == JSON else e.content_type
    tags = " ".join(e.tags) or None
    mine = (e.type, e.schema_version, e.payload, e.metadata, content_type, tags)
    dup = await conn.fetchrow(
        "SELECT stream_id, sequence, type, schema_version, payload, metadata, content_type, tags "
        f"FROM {s}.events WHERE event_id = $1",
        e.event_id,
    )
    if dup is not None:  # a retry answers the stored event; anything else is a duplicate
        if row is None or (dup[0], dup[1]) != (row[0], upto):
            raise DuplicateEventError(e.event_id, "in another place")
        if tuple(dup[2:]) != mine:
            raise DuplicateEventError(e.event_id, "with different content")
        return
    target = None
    if row is not None and row[2] <= upto <= row[1]:
        target = await conn.fetchrow(
            f"SELECT xid, id FROM {s}.events WHERE stream_id = $1 AND sequence = $2", row[0], upto
        )
    if target is None:
        raise ValidationError(f"{stream} shows no event at sequence {upto}", field="upto")
    xid, eid = target
    await conn.execute(
        f"UPDATE {s}.events SET event_id = $1, type = $2, schema_version = $3, payload = $4, "
        "metadata = $5, content_type = $6, tags = $7 WHERE xid = $8 AND id = $9",
        e.event_id,
        *mine,
        xid,
        eid,
    )
    await conn.execute(f"DELETE FROM {s}.event_tags WHERE xid = $1 AND id = $2", xid, eid)
    if e.tags:
        await conn.execute(
            f"INSERT INTO {s}.event_tags (tag, xid, id) SELECT t, $2, $3 FROM unnest($1::text[]) t",
            list(e.tags),
            xid,
            eid,
        )
    await conn.execute(
        f"UPDATE {s}.streams SET truncate_before = greatest(truncate_before, $2) WHERE id = $1",
        row[0],
        upto,
    )
    await conn.execute(f"DELETE FROM {s}.snapshots WHERE {_KEY} AND sequence < $4", *key, upto)
