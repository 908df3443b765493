"""In-place rewrites of a SQLite store (redaction, dropping a snapshot), off the group commit.

They run on a connection of their own in a worker thread, one transaction each
(``BEGIN IMMEDIATE``: they wait for the writer's lock within the busy timeout), with
``secure_delete`` on so the old bytes are zeroed in the database pages they leave; free pages
and WAL frames keep them until ``chronik.lifecycle.forget.compact_sqlite`` rewrites the file.
"""

from __future__ import annotations

import asyncio
import sqlite3

from chronik.messages import StreamId
from chronik.store.sqlite.commit import connect
from chronik.store.sqlite.errors import locked, unit_failed

__all__ = ["drop_snapshot", "rewrite_event"]


def _run(
    path: str, busy_ms: int, synchronous: str, statements: list[tuple[str, tuple[object, ...]]]
) -> int:
    """Run the statements in one transaction; the rows the first one changed."""
    conn = connect(path, busy_ms, synchronous)
    try:
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            changed = -1
            for sql, params in statements:
                count = conn.execute(sql, params).rowcount
                changed = count if changed < 0 else changed
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return changed
    finally:
        conn.close()


async def _in_thread(
    path: str, busy_ms: int, synchronous: str, statements: list[tuple[str, tuple[object, ...]]]
) -> int:
    try:
        return await asyncio.to_thread(_run, path, busy_ms, synchronous, statements)
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise locked(path, busy_ms) from exc
        raise unit_failed(path, exc) from exc
    except sqlite3.Error as exc:
        raise unit_failed(path, exc) from exc


def _snapshot_delete(stream: StreamId) -> tuple[str, tuple[object, ...]]:
    return (
        "DELETE FROM chronik_snapshots WHERE tenant = ? AND domain = ? AND aggregate_id = ?",
        (stream.tenant, stream.domain, stream.aggregate_id),
    )


async def rewrite_event(
    path: str,
    busy_ms: int,
    synchronous: str,
    event_id: str,
    stream: StreamId,
    payload: bytes,
    content_type: str,
) -> bool:
    """Set the event's payload and content type (NULL for JSON) and drop its stream's
    snapshot; False if the event is gone."""
    update = (
        "UPDATE chronik_events SET payload = ?, content_type = ? WHERE event_id = ?",
        (payload, None if content_type == "application/json" else content_type, event_id),
    )
    return await _in_thread(path, busy_ms, synchronous, [update, _snapshot_delete(stream)]) > 0


async def drop_snapshot(path: str, busy_ms: int, synchronous: str, stream: StreamId) -> bool:
    """Delete the stream's snapshot; True if there was one."""
    return await _in_thread(path, busy_ms, synchronous, [_snapshot_delete(stream)]) > 0
