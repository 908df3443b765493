"""A small asyncmy connection pool for the MySQL store, and the one way statements are run.

Every connection is set up the same way when it opens (``SESSION_SQL``): READ COMMITTED, a
strict ``sql_mode`` without ``NO_BACKSLASH_ESCAPES`` (the driver escapes values with
backslashes), ``innodb_lock_wait_timeout`` and, on MariaDB, ``idle_transaction_timeout`` (the
server ends a session that sits inside a transaction that long: a frozen process releases the
position counter's lock). Acquire and release cost no I/O; a connection that failed in a way
that may leave it unusable, or that is inside a transaction, is closed instead of pooled.

``run`` sends one or more statements in one round trip (the connections use
``CLIENT.MULTI_STATEMENTS``) and returns one ``Result`` per statement; values are bound by
the driver's escaping (``%s``), never formatted by chronik.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple

import asyncmy
from asyncmy.constants import CLIENT

from chronik.store.mysql.schema import MySQLOptions

__all__ = ["MAX_PACKET", "ConnectionPool", "Result", "connect", "in_transaction", "run"]

#: The largest packet the client sends; batches of statements stay far below it (the server's
#: own ``max_allowed_packet`` is 16 MiB by default: ``write`` splits batches at BATCH_BYTES).
MAX_PACKET = 256 * 1024 * 1024

#: The session settings (READ COMMITTED: every statement sees what committed before it, and
#: locking reads take no gap locks).
SESSION_SQL = (
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; "
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_ZERO_DATE'; "
    "SET SESSION time_zone = '+00:00'; "
    "SET SESSION sql_notes = 0"
)


class Result(NamedTuple):
    """What one statement of a batch returned: its rows (None without a result set) and the
    number of rows it changed."""

    rows: list[tuple[Any, ...]] | None
    rowcount: int


async def run(
    conn: asyncmy.Connection, sql: str, args: Sequence[Any] | None = None
) -> list[Result]:
    """Run ``sql`` (one statement or several separated by ``;``) with ``args`` bound to its
    ``%s`` placeholders; one Result per statement. An error of any statement is raised after
    the ones before it ran (the rest did not run)."""
    out: list[Result] = []
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        while True:
            rows = list(await cur.fetchall()) if cur.description else None
            count: Any = cur.rowcount
            out.append(Result(rows, int(count)))
            if not await cur.nextset():
                return out


async def connect(options: MySQLOptions, database: str | None) -> asyncmy.Connection:
    """A new connection set up as ``SESSION_SQL`` says (``database`` None: none selected)."""
    settings = options.settings
    conn: asyncmy.Connection = await asyncmy.connect(
        host=options.host,
        port=options.port,
        user=options.user,
        password=options.password,
        database=database,
        charset="utf8mb4",
        autocommit=True,
        client_flag=CLIENT.MULTI_STATEMENTS,
        connect_timeout=float(settings["connect_timeout"]),
        max_allowed_packet=MAX_PACKET,
    )
    try:
        sql = SESSION_SQL
        lock_wait, idle = (
            int(settings["lock_wait_timeout"]),
            int(settings["idle_transaction_timeout"]),
        )
        if lock_wait:
            sql += f"; SET SESSION innodb_lock_wait_timeout = {lock_wait}"
        if idle and is_mariadb(conn):
            sql += f"; SET SESSION idle_transaction_timeout = {idle}"
        await run(conn, sql)
    except BaseException:
        conn.close()
        raise
    return conn


def is_mariadb(conn: asyncmy.Connection) -> bool:
    """Whether the server is MariaDB (else MySQL)."""
    return "mariadb" in str(conn.get_server_info()).lower()


def in_transaction(conn: asyncmy.Connection) -> bool:
    """Whether the server said the session is inside a transaction."""
    return bool(conn.get_transaction_status())


class ConnectionPool:
    """Up to ``max_size`` connections to the store's database, ``min_size`` opened up front."""

    def __init__(self, options: MySQLOptions) -> None:
        self._options = options
        self.min_size = int(options.settings["pool_min_size"])
        self.max_size = int(options.settings["pool_max_size"])
        self._idle: list[asyncmy.Connection] = []
        self._size = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def open(self) -> None:
        """Open ``min_size`` connections; raises the driver's error if the server is down."""
        conns = await asyncio.gather(*(self._connect() for _ in range(self.min_size)))
        self._idle.extend(conns)

    async def _connect(self) -> asyncmy.Connection:
        self._size += 1
        try:
            return await connect(self._options, self._options.database)
        except BaseException:
            self._size -= 1
            self._wake()
            raise

    async def acquire(self) -> asyncmy.Connection:
        """An idle connection, a new one, or the next one released."""
        while True:
            if self._closed:
                raise ConnectionError("the connection pool is closed")
            while self._idle:
                conn = self._idle.pop()
                if conn.connected:
                    return conn
                self._size -= 1
            if self._size < self.max_size:
                return await self._connect()
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except BaseException:
                if not fut.cancelled() and fut.done():
                    self._wake()  # pass the wake-up on
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)

    def release(self, conn: asyncmy.Connection, discard: bool = False) -> None:
        """Give ``conn`` back; ``discard`` closes it (after an error that may have broken it)."""
        if discard or self._closed or not conn.connected or in_transaction(conn):
            self._size -= 1
            with contextlib.suppress(Exception):
                conn.close()
        else:
            self._idle.append(conn)
        self._wake()

    def discard_idle(self) -> None:
        """Close every idle connection (after the server went away, they are all dead)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            self._size -= 1
            with contextlib.suppress(Exception):
                conn.close()

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncmy.Connection]:
        """A pooled connection for the block; closed when the block fails."""
        conn = await self.acquire()
        ok = False
        try:
            yield conn
            ok = True
        finally:
            self.release(conn, discard=not ok)

    async def close(self) -> None:
        """Close idle connections now; busy ones are closed when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._size -= 1
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ensure_closed(), 2)
            with contextlib.suppress(Exception):
                conn.close()
        self._wake()
