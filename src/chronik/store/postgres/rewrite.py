"""In-place rewrites of a PostgreSQL store (redaction, dropping a snapshot).

One transaction each on a pooled connection. The old row version stays in the table's heap
until VACUUM reclaims it (and in WAL segments until they are recycled): run ``VACUUM`` on the
schema's ``events`` and ``snapshots`` tables after redacting if the disk must be clean too.
"""

from __future__ import annotations

from typing import NoReturn

from chronik.messages import JSON, StreamId
from chronik.store.postgres.errors import DRIVER_ERRORS, write_error
from chronik.store.postgres.pool import ConnectionPool

__all__ = ["drop_snapshot", "rewrite_event"]


def _snapshot_delete(schema: str) -> str:
    return f"DELETE FROM {schema}.snapshots WHERE tenant = $1 AND domain = $2 AND aggregate_id = $3"


def _raise(url: str, exc: BaseException) -> NoReturn:
    error, _ = write_error(url, exc)
    raise error from exc


async def rewrite_event(
    pool: ConnectionPool,
    schema: str,
    url: str,
    event_id: str,
    stream: StreamId,
    payload: bytes,
    content_type: str,
) -> bool:
    """Set the event's payload and content type and drop its stream's snapshot, in one
    transaction; False if the event is gone."""
    stored = None if content_type == JSON else content_type
    try:
        async with pool.connection() as conn, conn.transaction():
            status = await conn.execute(
                f"UPDATE {schema}.events SET payload = $1, content_type = $2 WHERE event_id = $3",
                payload,
                stored,
                event_id,
            )
            await conn.execute(
                _snapshot_delete(schema), stream.tenant, stream.domain, stream.aggregate_id
            )
    except DRIVER_ERRORS as exc:
        _raise(url, exc)
    return bool(status.endswith(" 1"))


async def drop_snapshot(pool: ConnectionPool, schema: str, url: str, stream: StreamId) -> bool:
    """Delete the stream's snapshot; True if there was one."""
    try:
        status = await pool.execute(
            _snapshot_delete(schema), stream.tenant, stream.domain, stream.aggregate_id
        )
    except DRIVER_ERRORS as exc:
        _raise(url, exc)
    return not status.endswith(" 0")
