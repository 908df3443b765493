"""Dropping archived events on the PostgreSQL store (``chronik.store.archive_ops``): a mixin of
``PostgresEventStore``. One short transaction deletes the events at or before the bound (and
their tag rows) and moves the floor; stream rows, and so versions, stay."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from chronik.messages import Position
from chronik.store.postgres.errors import DRIVER_ERRORS
from chronik.store.postgres.standby import read_only

if TYPE_CHECKING:
    from chronik.store.postgres.pool import ConnectionPool

__all__ = ["PostgresArchive"]


class PostgresArchive:
    """The archive primitives of the PostgreSQL store."""

    url: str
    standby: bool
    _s: str
    _pool: ConnectionPool

    if TYPE_CHECKING:  # PostgresReader's, PostgresRetention's

        async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...

        def _raise(self, exc: BaseException) -> NoReturn: ...

    async def _archive_floor(self) -> Position | None:
        rows = await self._fetch(f"SELECT xid, position_id FROM {self._s}.archive_floor")
        return Position(int(rows[0][0]), int(rows[0][1])) if rows else None

    async def _drop_archived(self, upto: Position) -> int:
        if self.standby:
            raise read_only(self.url)
        s = self._s
        try:
            async with self._pool.connection() as conn, conn.transaction():
                # one dropper at a time: the floor row is the lock
                await conn.execute(
                    f"INSERT INTO {s}.archive_floor (id, xid, position_id) VALUES (1, 0, 0) "
                    "ON CONFLICT (id) DO NOTHING"
                )
                floor = await conn.fetchrow(
                    f"SELECT xid, position_id FROM {s}.archive_floor WHERE id = 1 FOR UPDATE"
                )
                gone = await conn.fetchval(
                    f"WITH gone AS (DELETE FROM {s}.events WHERE (xid, id) > ($1, $2) "
                    "AND (xid, id) <= ($3, $4) RETURNING xid, id, tags), "
                    f"untag AS (DELETE FROM {s}.event_tags k USING gone g "
                    "WHERE g.tags IS NOT NULL AND k.xid = g.xid AND k.id = g.id "
                    "AND k.tag = ANY (string_to_array(g.tags, ' '))) "
                    "SELECT count(*) FROM gone",
                    int(floor[0]),
                    int(floor[1]),
                    upto.commit,
                    upto.index,
                )
                await conn.execute(
                    f"UPDATE {s}.archive_floor SET xid = $1, position_id = $2 WHERE id = 1 "
                    "AND (xid, position_id) < ($1, $2)",
                    upto.commit,
                    upto.index,
                )
                return int(gone)
        except DRIVER_ERRORS as exc:
            self._raise(exc)
