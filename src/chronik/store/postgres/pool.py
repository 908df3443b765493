"""A small asyncpg connection pool for the PostgreSQL store: acquire and release cost no I/O.

asyncpg's own pool sends a reset query (or at least schedules a task) on every release; the
store leaves no session state behind (its locks are transaction-scoped and every transaction is
committed or rolled back before release), so it needs none of that. A connection that failed
in a way that may leave it unusable is discarded, and a new one is opened on demand.

A DSN with several hosts (``postgresql://u@db1,db2/app?target_session_attrs=read-write``) is
walked host by host (``postgres.failover.HostList``): after a failover new connections reach
the new primary.

Every connection sets the server-side timeouts of ``TIMEOUTS`` (the store and the PostgreSQL
transport read them from their URL with ``timeout_settings``).

A new connection is warmed before anyone gets it: asyncpg has built-in codecs for scalar types
(and ``text[]``, ``oid[]``) only, and looks every other array type up in the catalog on a
connection's first statement that sends or returns one (the lock arrays ``int[]``, ``bool[]``,
the ids ``bigint[]``, a batch's ``bytea[]``): three extra round trips and a recursive catalog
query, 6-15 ms on a new backend. ``WARM_TYPES`` asks for them all at once when the connection
opens; then ``init`` (the owner's, e.g. the store's append functions) runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Final

import asyncpg

from chronik.errors import ConfigurationError
from chronik.store.postgres.failover import HostList
from chronik.store.postgres.schema import split_url

__all__ = ["TIMEOUTS", "WARM_TYPES", "ConnectionPool", "Init", "timeout_settings", "warm_appends"]

#: One statement returning every array type chronik's statements use (see the module doc).
WARM_TYPES: Final = "SELECT NULL::bool[], NULL::int4[], NULL::int8[], NULL::bytea[]"
#: What a pool's owner runs on each of its new connections.
Init = Callable[[asyncpg.Connection], Awaitable[None]]
#: The warm-up appends' stream and expectation (``warm_appends``): an exact version no stream
#: reaches, of a stream no validated name makes (empty domain).
_NOWHERE: Final = ("", "", "", 2**62)


def warm_appends(append_one: str, append_many: str) -> Init:
    """The store's ``init``: its stream append functions (``write.Statements``) run once on a
    new connection, so no append pays their first use in a backend (~1 ms of its CPU:
    compiling the function, planning its first statements) nor asyncpg's first Parse of the
    call. The expectation fails (status 1): nothing is written, no transaction id taken."""

    async def warm(conn: asyncpg.Connection) -> None:
        try:
            async with conn.transaction():
                # the functions take the DCB locks of every untagged append ('*' shared):
                # never wait behind a unit that holds one (the connection serves unwarmed)
                await conn.execute("SET LOCAL lock_timeout = 100")
                await conn.fetchrow(append_one, *_NOWHERE, "", "", 1, b"", None, None, None, 0)
                await conn.fetchrow(
                    append_many, *_NOWHERE, [""], [""], [1], [b""], [None], [None], [None], 0
                )
        except asyncpg.PostgresError:
            pass  # a lock held past 100 ms, no right to call them: served, only not warm

    return warm


#: Server-side timeouts (URL option -> (PostgreSQL setting, default in ms)).
TIMEOUTS: Final = {
    "lock_timeout_ms": ("lock_timeout", 5000),
    "idle_in_transaction_timeout_ms": ("idle_in_transaction_session_timeout", 30000),
    "statement_timeout_ms": ("statement_timeout", 30000),
}


def timeout_settings(dsn: str, options: MutableMapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The DSN without the TIMEOUTS options and the server settings they ask for; a keyword in
    ``options`` (popped) wins over the DSN's query, 0 turns a timeout off."""
    dsn, from_url = split_url(dsn, dict.fromkeys(TIMEOUTS, int))
    settings: dict[str, str] = {}
    for option, (setting, default) in TIMEOUTS.items():
        value = int(options.pop(option, from_url.get(option, default)))
        if value < 0:
            raise ConfigurationError(f"{option} must be >= 0 (0: no timeout), not {value}")
        settings[setting] = str(value)
    return dsn, settings


class ConnectionPool:
    """Up to ``max_size`` connections to ``dsn``; ``min_size`` of them opened up front."""

    def __init__(
        self,
        dsn: str,
        min_size: int,
        max_size: int,
        timeout: float = 10,
        server_settings: dict[str, str] | None = None,
        init: Init | None = None,
    ) -> None:
        self._dsn = dsn
        #: Run on each new connection after WARM_TYPES (``initialize`` sets it later).
        self.init = init
        self._server_settings = server_settings
        self.min_size = min_size
        self.max_size = max_size
        self._timeout = timeout
        self._idle: list[asyncpg.Connection] = []
        self._size = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._hosts = HostList(dsn, timeout)

    async def open(self) -> None:
        """Open ``min_size`` connections; raises the driver's error if the server is down."""
        conns = await asyncio.gather(*(self._connect() for _ in range(self.min_size)))
        self._idle.extend(conns)

    async def initialize(self, init: Init) -> None:
        """Run ``init`` on every idle connection now, and on each new one from now on."""
        self.init = init
        conns, self._idle = self._idle, []
        done = await asyncio.gather(*(init(c) for c in conns), return_exceptions=True)
        for conn, outcome in zip(conns, done, strict=True):
            self.release(conn, discard=isinstance(outcome, BaseException))
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _connect(self) -> asyncpg.Connection:
        self._size += 1
        try:
            conn = await self._hosts.connect(server_settings=self._server_settings)
        except BaseException:
            self._size -= 1
            self._wake()
            raise
        try:
            await conn.fetchrow(WARM_TYPES)
            if self.init is not None:
                await self.init(conn)
        except BaseException:
            self.release(conn, discard=True)
            raise
        return conn

    async def acquire(self) -> asyncpg.Connection:
        """An idle connection, a new one, or the next one released."""
        while True:
            if self._closed:
                raise asyncpg.InterfaceError("the connection pool is closed")
            while self._idle:
                conn = self._idle.pop()
                if not conn.is_closed():
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

    def release(self, conn: asyncpg.Connection, discard: bool = False) -> None:
        """Give ``conn`` back; ``discard`` closes it (after an error that may have broken it)."""
        if discard or self._closed or conn.is_closed() or conn.is_in_transaction():
            self._size -= 1
            conn.terminate()
        else:
            self._idle.append(conn)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """Run a query on a pooled connection."""
        conn = await self.acquire()
        ok = False
        try:
            rows: list[Any] = await conn.fetch(sql, *args)
            ok = True
            return rows
        except asyncpg.PostgresError as exc:
            ok = _answered(exc)
            raise
        finally:
            self.release(conn, discard=not ok)

    async def execute(self, sql: str, *args: Any) -> str:
        """Run a statement on a pooled connection; returns its status."""
        async with self.connection() as conn:
            status: str = await conn.execute(sql, *args)
            return status

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for the block; discarded when the block fails other than by an
        error the server answered with, or leaves it inside a transaction."""
        conn = await self.acquire()
        ok = False
        try:
            yield conn
            ok = True
        except asyncpg.PostgresError as exc:
            ok = _answered(exc)
            raise
        finally:
            self.release(conn, discard=not ok)

    async def close(self) -> None:
        """Close idle connections now; busy ones are closed when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._size -= 1
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                conn.terminate()
        self._wake()

    def terminate(self) -> None:
        """Close every idle connection at once, without a goodbye to the server."""
        self._closed = True
        for conn in self._idle:
            conn.terminate()
        self._idle.clear()


def _answered(exc: asyncpg.PostgresError) -> bool:
    """Whether the server answered ``exc`` on a connection that stays usable."""
    return not isinstance(
        exc, asyncpg.PostgresConnectionError | asyncpg.exceptions.OperatorInterventionError
    )
