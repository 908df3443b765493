"""Parked keys of the PostgreSQL transport's groups: ``transport_parks`` (see
``chronik.transports.parks``).

One row per (channel, key, consumer) with a lease (``until``), renewed while the consumer runs
(the transport's ``lease``), deleted when it stops; a crashed consumer's row lapses. The table
has its own versioned migrations (``transport_parks_migrations``, through the store's
migrator), applied the first time a consumer with policy ``park`` starts. Imported by scheme
from ``chronik.transports.parks``, never by the PostgreSQL transport itself.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any

from chronik.store.postgres.errors import DRIVER_ERRORS, transport_unavailable
from chronik.store.postgres.schema import migrate
from chronik.transports.parks import LeasedParks

if TYPE_CHECKING:
    from chronik.transports.postgres import PostgresTransport

__all__ = ["MIGRATIONS", "PostgresParks", "open_parks"]

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE IF NOT EXISTS {s}.transport_parks (
            channel text NOT NULL, key text NOT NULL, owner text NOT NULL,
            until timestamptz NOT NULL, PRIMARY KEY (channel, key, owner))""",
    ],
}
MIGRATIONS_TABLE = "transport_parks_migrations"
_migrated: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()
_done: weakref.WeakSet[Any] = weakref.WeakSet()


async def open_parks(
    transport: PostgresTransport, kind: str, name: str, group: str
) -> PostgresParks:
    """The parks of one consumer of ``group`` (or of queue ``name``)."""
    lock = _migrated.setdefault(transport, asyncio.Lock())
    async with lock:
        if transport not in _done:
            try:
                async with transport.pool().connection() as conn:
                    await migrate(conn, transport.schema, MIGRATIONS, MIGRATIONS_TABLE)
            except DRIVER_ERRORS as exc:
                raise transport_unavailable("PostgreSQL parks", exc) from exc
            _done.add(transport)
    channel = f"t:{name}/{group}" if kind == "topic" else f"q:{name}"
    return PostgresParks(transport, channel)


class PostgresParks(LeasedParks):
    """One consumer's parks in ``transport_parks``."""

    def __init__(self, transport: PostgresTransport, channel: str) -> None:
        super().__init__(transport.lease)
        self.t = transport
        self.channel = channel
        s = f'"{transport.schema}"'
        self._put_sql = (
            f"INSERT INTO {s}.transport_parks (channel, key, owner, until) "
            "VALUES ($1, $2, $3, now() + make_interval(secs => $4)) "
            "ON CONFLICT (channel, key, owner) DO UPDATE SET until = EXCLUDED.until"
        )
        self._parked_sql = (
            f"SELECT 1 FROM {s}.transport_parks WHERE channel = $1 AND key = $2 "
            "AND until > now() LIMIT 1"
        )
        self._renew_sql = (
            f"UPDATE {s}.transport_parks SET until = now() + make_interval(secs => $3) "
            "WHERE channel = $1 AND owner = $2"
        )
        self._remove_sql = (
            f"DELETE FROM {s}.transport_parks WHERE channel = $1 AND (owner = $2 OR until < now())"
        )

    async def _run(self, sql: str, *args: Any) -> list[Any]:
        try:
            return await self.t.pool().fetch(sql, *args)
        except DRIVER_ERRORS as exc:
            raise transport_unavailable("PostgreSQL parks", exc, unknown=True) from exc

    async def _put(self, key: str) -> None:
        await self._run(self._put_sql, self.channel, key, self.owner, self.lease)

    async def parked(self, key: str) -> bool:
        return bool(await self._run(self._parked_sql, self.channel, key))

    async def _renew(self) -> None:
        await self._run(self._renew_sql, self.channel, self.owner, self.lease)

    async def _remove(self) -> None:
        await self._run(self._remove_sql, self.channel, self.owner)
