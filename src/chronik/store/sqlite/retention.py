"""Retention and scavenging on the SQLite store (``chronik.store.retention``): a mixin of
``SQLiteEventStore``.

Reads run on the store's reader connection; writes (rules, scavenge batches) each run in one
short transaction on a connection of their own in a worker thread (``BEGIN IMMEDIATE``: they
wait for the writer's lock within the busy timeout), like the in-place rewrites. Positions are
row ids, which SQLite hands out again after the highest one is deleted: the log's last event is
therefore never removed, so no position is ever reused.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING, Any, Final

from chronik.errors import DuplicateEventError, StreamDeleted, ValidationError
from chronik.messages import JSON, RecordedEvent, StreamId
from chronik.store.deletion import STREAM_DELETED
from chronik.store.records import PreparedEvent
from chronik.store.retention import Retention, StreamRetention
from chronik.store.sqlite.commit import connect
from chronik.store.sqlite.errors import locked, unit_failed
from chronik.store.stream_start import check_start

__all__ = ["SQLiteRetention"]

_KEY: Final = "tenant = ? AND domain = ? AND aggregate_id = ?"
_SET: Final = (
    "INSERT INTO chronik_streams (tenant, domain, aggregate_id, version, max_age, max_count, "
    "truncate_before) VALUES (?, ?, ?, -1, ?, ?, ?) ON CONFLICT (tenant, domain, aggregate_id) "
    "DO UPDATE SET max_age = excluded.max_age, max_count = excluded.max_count, "
    "truncate_before = max(truncate_before, excluded.truncate_before)"
)
_PAGE: Final = (
    "SELECT s.id, s.tenant, s.domain, s.aggregate_id, s.version, s.truncate_before, s.max_age, "
    "s.max_count, s.tombstone, (SELECT min(e.sequence) FROM chronik_events e "
    "WHERE e.stream_id = s.id) FROM chronik_streams s WHERE s.id > ? ORDER BY s.id LIMIT ?"
)
_SET_START: Final = (
    "INSERT INTO chronik_streams (tenant, domain, aggregate_id, version, truncate_before) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, domain, aggregate_id) DO UPDATE SET "
    "version = excluded.version, "
    "truncate_before = max(truncate_before, excluded.truncate_before)"
)
# the events a batch removes: below ``before``, not the last deletion event, not the log's last
_PICK: Final = (
    "SELECT position, length(payload) + ifnull(length(metadata), 0), tags FROM chronik_events "
    "WHERE stream_id = ? AND sequence < ? AND sequence <> ifnull((SELECT max(sequence) "
    "FROM chronik_events WHERE stream_id = ? AND sequence < ? AND type = ?), -1) "
    "AND position < (SELECT max(position) FROM chronik_events) ORDER BY sequence"
)


def _snapshot_delete(stream: StreamId) -> str:
    return f"DELETE FROM chronik_snapshots WHERE {_KEY} AND sequence < ?"


def _set(conn: sqlite3.Connection, stream: StreamId, rules: Retention) -> None:
    key = (stream.tenant, stream.domain, stream.aggregate_id)
    before = rules.truncate_before or 0
    conn.execute(_SET, (*key, rules.max_age, rules.max_count, before))
    row = conn.execute(f"SELECT truncate_before FROM chronik_streams WHERE {_KEY}", key)
    conn.execute(_snapshot_delete(stream), (*key, row.fetchone()[0]))


def _start(conn: sqlite3.Connection, stream: StreamId, sequence: int) -> None:
    """``stream`` as scavenging leaves it (``chronik.store.stream_start``)."""
    key = (stream.tenant, stream.domain, stream.aggregate_id)
    row = conn.execute(
        f"SELECT version, tombstone, EXISTS (SELECT 1 FROM chronik_events e "
        f"WHERE e.stream_id = s.id) FROM chronik_streams s WHERE {_KEY}",
        key,
    ).fetchone()
    if check_start(
        stream, sequence, (row[0], bool(row[1]), bool(row[2])) if row else (-1, False, False)
    ):
        conn.execute(_SET_START, (*key, sequence - 1, sequence))
        conn.execute(_snapshot_delete(stream), (*key, sequence))


def _scavenge(
    conn: sqlite3.Connection, stream: StreamId, before: int, limit: int, dry_run: bool
) -> tuple[int, int]:
    key = (stream.tenant, stream.domain, stream.aggregate_id)
    row = conn.execute(f"SELECT id FROM chronik_streams WHERE {_KEY}", key).fetchone()
    if row is None:
        return 0, 0
    sid = row[0]
    params: tuple[Any, ...] = (sid, before, sid, before, STREAM_DELETED)
    if dry_run:
        picked = conn.execute(_PICK, params).fetchall()
        return len(picked), sum(r[1] for r in picked)
    conn.execute(
        "UPDATE chronik_streams SET truncate_before = max(truncate_before, ?) WHERE id = ?",
        (before, sid),
    )
    conn.execute(_snapshot_delete(stream), (*key, before))
    picked = conn.execute(f"{_PICK} LIMIT ?", (*params, limit)).fetchall()
    if picked:
        conn.executemany("DELETE FROM chronik_events WHERE position = ?", [(r[0],) for r in picked])
        tags = [(t, r[0]) for r in picked if r[2] for t in r[2].split(" ")]
        if tags:
            conn.executemany("DELETE FROM chronik_event_tags WHERE tag = ? AND position = ?", tags)
    return len(picked), sum(r[1] for r in picked)


def _compact(conn: sqlite3.Connection, stream: StreamId, upto: int, e: PreparedEvent) -> None:
    key = (stream.tenant, stream.domain, stream.aggregate_id)
    row = conn.execute(
        f"SELECT id, version, truncate_before, tombstone FROM chronik_streams WHERE {_KEY}", key
    ).fetchone()
    if row is not None and row[3]:
        raise StreamDeleted(stream)
    content_type = None if e.content_type == JSON else e.content_type
    tags = " ".join(e.tags) or None
    mine = (e.type, e.schema_version, e.payload, e.metadata, content_type, tags)
    dup = conn.execute(
        "SELECT stream_id, sequence, type, schema_version, payload, metadata, content_type, tags "
        "FROM chronik_events WHERE event_id = ?",
        (e.event_id,),
    ).fetchone()
    if dup is not None:  # a retry answers the stored event; anything else is a duplicate
        if row is None or (dup[0], dup[1]) != (row[0], upto):
            raise DuplicateEventError(e.event_id, "in another place")
        if tuple(dup[2:]) != mine:
            raise DuplicateEventError(e.event_id, "with different content")
        return
    target = None
    if row is not None and row[2] <= upto <= row[1]:
        target = conn.execute(
            "SELECT position FROM chronik_events WHERE stream_id = ? AND sequence = ?",
            (row[0], upto),
        ).fetchone()
    if target is None:
        raise ValidationError(f"{stream} shows no event at sequence {upto}", field="upto")
    position = target[0]
    conn.execute(
        "UPDATE chronik_events SET event_id = ?, type = ?, schema_version = ?, payload = ?, "
        "metadata = ?, content_type = ?, tags = ? WHERE position = ?",
        (e.event_id, *mine, position),
    )
    conn.execute("DELETE FROM chronik_event_tags WHERE position = ?", (position,))
    conn.executemany(
        "INSERT INTO chronik_event_tags (tag, position) VALUES (?, ?)",
        [(t, position) for t in e.tags],
    )
    conn.execute(
        "UPDATE chronik_streams SET truncate_before = max(truncate_before, ?) WHERE id = ?",
        (upto, row[0]),
    )
    conn.execute(_snapshot_delete(stream), (*key, upto))


class SQLiteRetention:
    """The retention primitives of the SQLite store."""

    path: str
    busy_timeout_ms: int
    synchronous: str

    if TYPE_CHECKING:  # SQLiteReader's

        def _read(self, sql: str, params: Any) -> list[Any]: ...

        async def _get_event(self, event_id: str) -> RecordedEvent | None: ...

    async def _in_transaction(self, fn: Any, *args: Any) -> Any:
        """``fn(conn, *args)`` in one transaction on a connection of its own, in a thread."""

        def run() -> Any:
            conn = connect(self.path, self.busy_timeout_ms, self.synchronous)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn, *args)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                return result
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(run)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise locked(self.path, self.busy_timeout_ms) from exc
            raise unit_failed(self.path, exc) from exc
        except sqlite3.Error as exc:
            raise unit_failed(self.path, exc) from exc

    async def _set_retention(self, stream: StreamId, retention: Retention) -> None:
        await self._in_transaction(_set, stream, retention)

    async def _start_stream_at(self, stream: StreamId, sequence: int) -> None:
        await self._in_transaction(_start, stream, sequence)

    async def _get_retention(self, stream: StreamId) -> Retention:
        rows = self._read(
            f"SELECT max_age, max_count, truncate_before FROM chronik_streams WHERE {_KEY}",
            (stream.tenant, stream.domain, stream.aggregate_id),
        )
        if not rows:
            return Retention()
        age, count, before = rows[0]
        return Retention(age, count, before or None)

    async def _retention_page(
        self, cursor: int | None, limit: int
    ) -> tuple[list[StreamRetention], int | None]:
        rows = self._read(_PAGE, (cursor or 0, limit))
        out = [
            StreamRetention(
                StreamId(r[2], r[3], r[1]),
                r[4],
                r[5],
                Retention(r[6], r[7], r[5] or None),
                bool(r[8]),
                r[9],
            )
            for r in rows
            if r[9] is not None
        ]
        return out, (rows[-1][0] if len(rows) == limit else None)

    async def _first_sequence_since(self, stream: StreamId, recorded_at_us: int) -> int | None:
        rows = self._read(
            "SELECT min(e.sequence) FROM chronik_events e JOIN chronik_streams s "
            "ON s.id = e.stream_id WHERE s.tenant = ? AND s.domain = ? AND s.aggregate_id = ? "
            "AND e.recorded_at >= ?",
            (stream.tenant, stream.domain, stream.aggregate_id, recorded_at_us),
        )
        return rows[0][0] if rows else None

    async def _scavenge_stream(
        self, stream: StreamId, before: int, limit: int, dry_run: bool
    ) -> tuple[int, int]:
        result: tuple[int, int] = await self._in_transaction(
            _scavenge, stream, before, limit, dry_run
        )
        return result

    async def _compact_stream(
        self, stream: StreamId, upto: int, event: PreparedEvent
    ) -> RecordedEvent:
        await self._in_transaction(_compact, stream, upto, event)
        stored = await self._get_event(event.event_id)
        if stored is None:  # pragma: no cover - written just now
            raise ValidationError(f"{stream} shows no event at sequence {upto}", field="upto")
        return stored
