"""Dropping archived events on the SQLite store (``chronik.store.archive_ops``): a mixin of
``SQLiteEventStore``, in one short transaction like the scavenger's batches
(``chronik.store.sqlite.retention``). The log's last event stays (the template refuses it), so
no row id is handed out twice."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from chronik.messages import Position

__all__ = ["SQLiteArchive"]


def _drop(conn: sqlite3.Connection, upto: int) -> int:
    row = conn.execute("SELECT position FROM chronik_archive_floor WHERE id = 1").fetchone()
    floor = row[0] if row else 0
    tagged = conn.execute(
        "SELECT position, tags FROM chronik_events WHERE position > ? AND position <= ? "
        "AND tags IS NOT NULL",
        (floor, upto),
    ).fetchall()
    tags = [(t, r[0]) for r in tagged for t in r[1].split(" ")]
    if tags:
        conn.executemany("DELETE FROM chronik_event_tags WHERE tag = ? AND position = ?", tags)
    gone = conn.execute(
        "DELETE FROM chronik_events WHERE position > ? AND position <= ?", (floor, upto)
    ).rowcount
    conn.execute(
        "INSERT INTO chronik_archive_floor (id, position) VALUES (1, ?) ON CONFLICT (id) "
        "DO UPDATE SET position = max(position, excluded.position)",
        (upto,),
    )
    return int(gone)


class SQLiteArchive:
    """The archive primitives of the SQLite store."""

    if TYPE_CHECKING:  # SQLiteReader's, SQLiteRetention's

        def _read(self, sql: str, params: Any) -> list[Any]: ...

        async def _in_transaction(self, fn: Any, *args: Any) -> Any: ...

    async def _archive_floor(self) -> Position | None:
        rows = self._read("SELECT position FROM chronik_archive_floor WHERE id = 1", ())
        return Position(rows[0][0]) if rows else None

    async def _drop_archived(self, upto: Position) -> int:
        gone: int = await self._in_transaction(_drop, upto.commit)
        return gone
