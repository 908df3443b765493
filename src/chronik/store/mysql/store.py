"""The MySQL / MariaDB event store (``mysql://user:pass@host:3306/db``, also ``mariadb://``).

The adapter assembles the package: ``write`` (a unit of work on one connection), ``read`` and
``tables`` (pages, read-model tables, leases), ``dcb`` (conditions and query pages as SQL),
``pool`` (the connections and their session settings), ``schema`` (URL and migrations) and
``errors``. Any number of processes may share one database.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

import asyncmy

from chronik.adapters import safe_url
from chronik.errors import ChronikError, ConfigurationError, StoreUnavailable
from chronik.messages import AppendResult
from chronik.store.base import EventStore
from chronik.store.mysql.append import append_one, one_round_trip
from chronik.store.mysql.errors import (
    DRIVER_ERRORS,
    is_connection_error,
    not_sent,
    unavailable,
    write_error,
)
from chronik.store.mysql.pool import ConnectionPool, connect, is_mariadb, run
from chronik.store.mysql.read import MySQLReader
from chronik.store.mysql.schema import (
    SCHEMA_VERSION,
    MySQLOptions,
    migrate,
    quote_database,
    schema_version,
)
from chronik.store.mysql.write import WriteState, retry_after, write_unit
from chronik.store.records import WriteUnit

__all__ = ["MySQLEventStore"]

MAX_ATTEMPTS: Final = 8


class MySQLEventStore(MySQLReader, EventStore):
    """An event store in one MySQL / MariaDB database (InnoDB); any number of processes may
    share it."""

    supports_tables = True
    # positions are assigned in commit order (the log_head counter): a filtered reader that
    # found nothing of its own up to the head may skip there
    head_bounds_reads = True

    def __init__(self, url: str, **options: Any) -> None:
        """Options (keywords win over the URL's query string): ``migrate`` (default True:
        create the database and its tables on open), ``pool_min_size`` (1), ``pool_max_size``
        (16), ``poll_interval`` (0.05 s: how often waiting subscribers look for other
        processes' commits), ``lock_wait_timeout`` (5 s; 0: the server's), ``idle_transaction_
        timeout`` (30 s, MariaDB only; 0: none), ``connect_timeout`` (10 s),
        ``max_payload_bytes``, ``max_append_events``."""
        self.options = MySQLOptions.parse(url, options)
        super().__init__(**self.options.limits)
        self.url = url
        self.database = self.options.database
        settings = self.options.settings
        self.auto_migrate = bool(settings["migrate"])
        self.poll_interval = float(settings["poll_interval"])
        #: Found on open: MariaDB (else MySQL), and the binary no-pad collation used.
        self.mariadb = False
        self.collation = ""
        self._watchers = 0
        self._poll_task: asyncio.Task[None] | None = None
        self._seen: int | None = None  # the counter as the poll last saw it

    def __repr__(self) -> str:
        return f"<MySQLEventStore {safe_url(self.url)} {self._state}>"

    # --- lifecycle ----------------------------------------------------------------------------

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            conn = await connect(self.options, None)
        except DRIVER_ERRORS as exc:
            raise unavailable("connecting", self.url, exc) from exc
        try:
            await self._prepare(conn)
        except ChronikError:
            raise
        except DRIVER_ERRORS as exc:
            raise unavailable("migrating", self.url, exc) from exc
        finally:
            conn.close()
        self._pool = ConnectionPool(self.options)
        try:
            await self._pool.open()
        except DRIVER_ERRORS as exc:
            await self._pool.close()
            raise unavailable("connecting", self.url, exc) from exc

    async def _prepare(self, conn: asyncmy.Connection) -> None:
        """Create the database if missing and migrate it (or check its version)."""
        self.mariadb = is_mariadb(conn)
        self.collation = "utf8mb4_nopad_bin" if self.mariadb else "utf8mb4_0900_bin"
        db = quote_database(self.database)
        if self.auto_migrate:
            await run(
                conn,
                f"CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4 "
                f"COLLATE {self.collation}",
            )
        else:
            exists = await run(
                conn,
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s",
                (self.database,),
            )
            if not exists[0].rows:
                raise ConfigurationError(
                    f"database {self.database} does not exist: open it once with migrate=true"
                )
        await run(conn, f"USE {db}")

        async def fetch(sql: str, args: Any = None) -> list[Any]:
            return (await run(conn, sql, args))[0].rows or []

        if self.auto_migrate:
            await migrate(fetch, self.database, self.collation)
            return
        found = await schema_version(fetch)
        if found != SCHEMA_VERSION:
            raise ConfigurationError(
                f"database {self.database} is at schema version {found}, this chronik needs "
                f"{SCHEMA_VERSION}: open it once with migrate=true"
            )

    async def _close(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poll_task
        await self._pool.close()

    # --- writing ------------------------------------------------------------------------------

    async def _write(self, unit: WriteUnit) -> list[AppendResult]:
        try:
            results = await self._write_attempts(unit)
        except StoreUnavailable as exc:
            self._write_failed(exc)
            raise
        self._write_succeeded()
        return results

    async def _write_attempts(self, unit: WriteUnit) -> list[AppendResult]:
        """Write the unit, again after a deadlock, a racing duplicate id or a connection that
        died before the commit was sent (a pooled connection of a server that restarted);
        every exception comes out typed (a real cancellation of the caller excepted), and a
        connection that may be inside a transaction is never pooled again."""
        for attempt in range(MAX_ATTEMPTS):
            try:
                conn = await self._pool.acquire()
            except DRIVER_ERRORS as exc:
                raise unavailable("connecting", self.url, exc) from exc
            state = WriteState()
            broken = True
            try:
                if self.fault_hook is None and one_round_trip(unit):
                    results = [await append_one(conn, unit.appends[0], state)]
                else:
                    results = await write_unit(conn, unit, state, self.fault_hook)
                broken = False
            except ChronikError:
                broken = not await _rollback(conn)
                raise
            except BaseException as exc:
                last = attempt == MAX_ATTEMPTS - 1
                if retry_after(exc) and not last:
                    broken = not await _rollback(conn)
                    await asyncio.sleep(0.001 * (attempt + 1))
                    continue
                unsent = not state.committing or not_sent(exc)
                if is_connection_error(exc) and unsent and attempt < 2:
                    # the server rolls back what the dead connection had begun
                    self._pool.discard_idle()
                    continue
                error, broken = write_error(self.url, exc, state.committing)
                if not broken:
                    broken = not await _rollback(conn)
                if error is exc:
                    raise
                raise error from exc
            finally:
                self._pool.release(conn, discard=broken)
            if unit.appends:
                self._notify()
            return results
        raise StoreUnavailable(f"write gave up after {MAX_ATTEMPTS} attempts (deadlocks)")

    # --- other processes' commits -------------------------------------------------------------

    def _watch(self, delta: int) -> None:
        self._watchers += delta
        if self._watchers > 0 and (self._poll_task is None or self._poll_task.done()):
            self._poll_task = self._loop.create_task(self._poll())

    async def _poll(self) -> None:
        """While subscribers wait: wake them when the position counter moved (a commit of
        another process) or the server does not answer (they re-read and see the outage)."""
        while self._watchers > 0 and not self.closed:
            try:
                rows = await self._fetch("SELECT `last` FROM log_head WHERE id = 1")
                last = int(rows[0][0]) if rows else 0
            except StoreUnavailable:
                last = -1
            if last != self._seen:
                if self._seen is not None:
                    self._notify()
                self._seen = last
            await asyncio.sleep(self.poll_interval)


async def _rollback(conn: asyncmy.Connection) -> bool:
    """Roll back whatever the connection has begun; False when that failed (drop it)."""
    try:
        await run(conn, "ROLLBACK")
    except Exception:
        return False
    return True
