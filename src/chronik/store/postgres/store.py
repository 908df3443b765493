"""The PostgreSQL event store (``postgresql://user@host:5432/db?schema=chronik``).

asyncpg with a connection pool. An append is one round trip: a server-side function
(``append_event``, or ``append_events`` for several) takes the stream's advisory lock (writers
to other streams never wait) and shares the DCB keys of its events (``postgres.dcb``), checks
the expectation and inserts the events and their tags, in autocommit. So is a tagged append
(``append_tagged``, with or without its condition): the ``append_tagged`` function takes its
locks, checks the condition and inserts the events in one statement. Any other unit of work
takes all its locks first (its streams, its events' DCB keys shared, its append conditions'
keys exclusive), checks its conditions and ``expect``s, then runs the same functions (one call
per run of tagged events) inside one transaction, with its checkpoints and snapshots.
Positions are ``(transaction id, row id)``; readers stop at the safe horizon (see
``postgres_schema``), so no reader passes a transaction that may still commit.

URL options: ``schema`` (default ``chronik``), ``migrate`` (default true: create or upgrade the
schema on open), ``pool_min_size``, ``pool_max_size``, ``poll_interval`` (seconds between
polls while LISTEN is down), ``max_payload_bytes``, ``max_append_events``, and the server-side
timeouts every connection of the store sets (milliseconds, 0 turns one off):
``lock_timeout_ms`` (default 5000: a statement waiting longer for a lock fails),
``idle_in_transaction_timeout_ms`` (default 30000: the server ends a session that sits inside
a transaction that long, e.g. a frozen or partitioned process, releasing its locks and the
readers' horizon) and ``statement_timeout_ms`` (default 30000; migrations run without it).
Other query parameters go to the driver (``sslmode``, ...).

On a hot standby (``pg_is_in_recovery()``) the store only reads (``chronik.store.postgres.
standby``): it never migrates (it waits up to ``standby_wait`` seconds, default 30, for the
primary's schema to be replayed), every write raises StoreReadOnly, and subscriptions are woken
by polling WAL replay every ``replay_poll_interval`` seconds (default 0.02) instead of LISTEN.
Once that standby is promoted the store takes writes and LISTENs (``postgres.failover``, which
also describes multi-host URLs with ``target_session_attrs=read-write`` for failover).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import asyncpg

from chronik.adapters import safe_url
from chronik.errors import ChronikError, ConfigurationError, StoreUnavailable
from chronik.messages import AppendResult, Position, RecordedEvent, StreamId
from chronik.store.base import EventStore, StoreHealth, WriteUnit
from chronik.store.postgres import rewrite
from chronik.store.postgres.archive import PostgresArchive
from chronik.store.postgres.errors import DRIVER_ERRORS, unavailable, write_error
from chronik.store.postgres.failover import replay_state
from chronik.store.postgres.feed import ChangeFeed
from chronik.store.postgres.pool import TIMEOUTS, ConnectionPool, timeout_settings, warm_appends
from chronik.store.postgres.read import HORIZON, HorizonLag, PostgresReader
from chronik.store.postgres.retention import PostgresRetention
from chronik.store.postgres.schema import (
    DEFAULT_SCHEMA,
    SCHEMA_VERSION,
    migrate,
    quote_schema,
    schema_version,
    split_url,
)
from chronik.store.postgres.standby import (
    REPLAY_POLL_SECONDS,
    ReplayLag,
    in_recovery,
    read_only,
    replay_lag,
    wait_for_schema,
)
from chronik.store.postgres.write import Retry, Statements, write_unit
from chronik.store.tenant_reads import check_tenant_filter

__all__ = ["TIMEOUTS", "HorizonLag", "PostgresEventStore", "migrate_database"]

MAX_ATTEMPTS: Final = 8


class PostgresEventStore(PostgresReader, PostgresArchive, PostgresRetention, EventStore):
    """An event store in one PostgreSQL schema; any number of processes may share it."""

    supports_tables = True  # read-model tables and leases: chronik.store.postgres.tables
    supports_deletion = True  # soft / hard deletes: chronik.store.deletion

    # head() is the safe head: every event at or before it is final (no transaction that may
    # still commit sorts before it), so a filtered reader that found nothing of its own up to
    # the head may skip there, as on memory and SQLite.
    head_bounds_reads = True

    def __init__(self, url: str, **options: Any) -> None:
        """Options (keywords win over the URL's query string): ``schema`` (default
        ``chronik``), ``migrate`` (default True), ``pool_min_size`` (2), ``pool_max_size``
        (16), ``poll_interval`` (0.2 s), ``max_payload_bytes``, ``max_append_events``,
        ``lock_timeout_ms`` (5000), ``idle_in_transaction_timeout_ms`` (30000),
        ``statement_timeout_ms`` (30000), ``tenant`` (every connection scoped to one tenant
        by row-level security: ``chronik.tenant``, schema 9)."""
        dsn, from_url = split_url(url)
        settings: dict[str, Any] = {
            "schema": DEFAULT_SCHEMA,
            "migrate": True,
            "pool_max_size": 16,
            "poll_interval": 0.2,
            "standby_wait": 30.0,
            "replay_poll_interval": REPLAY_POLL_SECONDS,
            **from_url,
            **options,
        }
        schema = settings.pop("schema")
        dsn, self.server_settings = timeout_settings(dsn, settings)
        if (tenant := settings.pop("tenant", None)) is not None:
            check_tenant_filter(tenant)
            self.server_settings["chronik.tenant"] = tenant or "-"
        self.auto_migrate = bool(settings.pop("migrate"))
        self.pool_max_size = int(settings.pop("pool_max_size"))
        self.pool_min_size = int(settings.pop("pool_min_size", min(2, self.pool_max_size)))
        self.poll_interval = float(settings.pop("poll_interval"))
        self.standby_wait = float(settings.pop("standby_wait"))
        self.replay_poll_interval = float(settings.pop("replay_poll_interval"))
        #: True when the server is a hot standby (found on open): reads only.
        self.standby = False
        super().__init__(**settings)
        self.url = url
        self.dsn = dsn
        self.schema = schema
        self.statements = Statements.for_schema(schema)
        self._s = self.statements.s
        self.lock_class = self.statements.lock_class
        if not 1 <= self.pool_min_size <= self.pool_max_size:
            raise ConfigurationError("need 1 <= pool_min_size <= pool_max_size")
        self._init_reader()
        self._watchers = 0
        self._poll_task: asyncio.Task[None] | None = None
        self._recheck: asyncio.TimerHandle | None = None
        self._recheck_delay = 0.0
        self._feed: ChangeFeed | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pool = ConnectionPool(
            self.dsn, self.pool_min_size, self.pool_max_size, server_settings=self.server_settings
        )
        try:
            await self._pool.open()
        except DRIVER_ERRORS as exc:
            self._pool.terminate()
            raise unavailable("connecting", self.url, exc) from exc
        try:
            conn = await self._pool.acquire()
            try:
                # A migration may wait for another process's and take long: no timeouts.
                await conn.execute("SET lock_timeout = 0; SET statement_timeout = 0")
                self.standby = await in_recovery(conn)
                if self.standby:  # no DDL on a standby: the primary's schema, replayed
                    await wait_for_schema(conn, self.schema, self.url, self.standby_wait)
                elif self.auto_migrate:
                    await migrate(conn, self.schema)
                else:
                    found = await schema_version(conn, self.schema)
                    if found != SCHEMA_VERSION:
                        raise ConfigurationError(
                            f"schema {self.schema} is at version {found}, this chronik needs "
                            f"{SCHEMA_VERSION}: run `chronik db migrate` or open with migrate=true"
                        )
                await conn.execute("RESET lock_timeout; RESET statement_timeout")
            finally:
                self._pool.release(conn, discard=conn.is_in_transaction())
        except ChronikError:
            await self._pool.close()
            raise
        except DRIVER_ERRORS as exc:
            self._pool.terminate()
            raise unavailable("migrating", self.url, exc) from exc
        if self.standby:  # LISTEN is refused in recovery: _poll watches WAL replay instead
            self._health = StoreHealth(True, "hot standby: read-only")
            return
        try:
            sql = self.statements
            await self._pool.initialize(warm_appends(sql.append_one, sql.append_many))
        except DRIVER_ERRORS as exc:
            self._pool.terminate()
            raise unavailable("connecting", self.url, exc) from exc
        self._feed = ChangeFeed(
            self.dsn, f"chronik.{self.schema}", self._notify, self.server_settings
        )
        self._feed.start()

    async def _close(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
        if self._recheck is not None:
            self._recheck.cancel()
        if self._feed is not None:
            await self._feed.stop()
        await self._pool.close()

    def __repr__(self) -> str:
        return f"<PostgresEventStore {safe_url(self.url)} schema={self.schema} {self._state}>"

    # --- writing ------------------------------------------------------------------------------

    async def _write(self, unit: WriteUnit) -> list[AppendResult]:
        if self.standby and await self._still_standby():
            raise read_only(self.url)
        try:
            results = await self._write_attempts(unit)
        except StoreUnavailable as exc:
            self._write_failed(exc)
            raise
        self._write_succeeded()
        return results

    async def _write_attempts(self, unit: WriteUnit) -> list[AppendResult]:
        """Write the unit, again after a racing duplicate or a deadlock; every exception comes
        out typed (a real cancellation of the caller excepted), and a connection that may be
        inside a transaction is never pooled again."""
        resolved: dict[int, AppendResult] = {}
        for attempt in range(MAX_ATTEMPTS):
            try:
                conn = await self._pool.acquire()
            except DRIVER_ERRORS as exc:
                raise unavailable("connecting", self.url, exc) from exc
            broken = True
            try:
                results = await write_unit(conn, self.statements, unit, resolved, self.fault_hook)
                broken = False
            except Retry as retry:
                broken = False
                if retry.resolved is not None:
                    resolved = retry.resolved
                await asyncio.sleep(0.002 * attempt)
                continue
            except ChronikError:
                broken = False
                raise
            except BaseException as exc:
                error, broken = write_error(self.url, exc)
                if error is exc:
                    raise
                raise error from exc
            finally:
                # discarded (terminated) if it failed oddly or is still inside a transaction
                self._pool.release(conn, discard=broken)
            if unit.appends:
                self._notify()
                if self._feed is not None:
                    self._feed.notify_soon()
            return results
        raise StoreUnavailable(f"write gave up after {MAX_ATTEMPTS} attempts (conflicts)")

    # --- delivery: horizon, polling -----------------------------------------------------------

    async def _settled(self, after: Position | None) -> bool:
        settled = await super()._settled(after)
        if settled:
            self._recheck_delay = 0.0
        elif self._recheck is None:
            # An older transaction holds committed events back; it may end without a
            # notification (rollback, another application): look again soon, backing off.
            self._recheck_delay = min(0.25, max(0.005, self._recheck_delay * 2))
            self._recheck = self._loop.call_later(self._recheck_delay, self._recheck_now)
        return settled

    def _recheck_now(self) -> None:
        self._recheck = None
        self._notify()

    async def horizon_lag(self) -> HorizonLag:
        """How far delivery is held back by running transactions (see HorizonLag)."""
        await self._ready()
        rows = await self._fetch(
            f"""WITH h AS (SELECT {HORIZON} AS xmin)
            SELECT
              (SELECT ARRAY[xid, id] FROM {self._s}.events ORDER BY xid DESC, id DESC LIMIT 1),
              (SELECT ARRAY[e.xid, e.id] FROM {self._s}.events e, h WHERE e.xid < h.xmin
                ORDER BY e.xid DESC, e.id DESC LIMIT 1),
              (SELECT count(*) FROM {self._s}.events e, h WHERE e.xid >= h.xmin),
              (SELECT extract(epoch FROM max(clock_timestamp() - xact_start))::float8
                 FROM pg_stat_activity WHERE backend_xid IS NOT NULL)"""
        )
        head, safe, pending, age = rows[0]
        return HorizonLag(
            None if head is None else Position(head[0], head[1]),
            None if safe is None else Position(safe[0], safe[1]),
            int(pending),
            None if age is None else float(age),
        )

    @property
    def listening(self) -> bool:
        """True while the LISTEN connection is up (else subscriptions poll)."""
        return self._feed is not None and self._feed.connected

    async def replay_lag(self) -> ReplayLag | None:
        """How far this hot standby is behind its primary; None on a primary."""
        await self._ready()
        if not self.standby:
            return None
        return await self._call("read", lambda: self._with_conn(replay_lag))

    async def _with_conn(self, fn: Any) -> Any:
        async with self._pool.connection() as conn:
            return await fn(conn)

    # --- in-place rewrites (chronik.store.postgres.rewrite) -----------------------------------

    async def _rewrite_event(
        self, event_id: str, payload: bytes, content_type: str
    ) -> RecordedEvent | None:
        if self.standby:
            raise read_only(self.url)
        old = await self._get_event(event_id)
        if old is None:
            return None
        args = (self._pool, self._s, self.url, event_id, old.stream, payload, content_type)
        if not await rewrite.rewrite_event(*args):
            return None
        return await self._get_event(event_id)

    async def _drop_snapshot(self, stream: StreamId) -> bool:
        if self.standby:
            raise read_only(self.url)
        return await rewrite.drop_snapshot(self._pool, self._s, self.url, stream)

    def _watch(self, delta: int) -> None:
        self._watchers += delta
        if self._watchers > 0 and (self._poll_task is None or self._poll_task.done()):
            poll = self._poll_replay() if self.standby else self._poll()
            self._poll_task = self._loop.create_task(poll)

    async def _poll_replay(self) -> None:
        """On a standby, while subscriptions wait: wake them when WAL replay has moved."""
        seen: str | None = None
        while self._watchers > 0 and not self.closed:
            try:
                recovering, lsn = await self._with_conn(replay_state)
            except Exception:  # the standby is down: readers re-read and see the outage
                recovering, lsn = True, None
                await asyncio.sleep(self.poll_interval)
            if not recovering:  # promoted: a primary's store from now on
                self._promoted()
                await self._poll()
                return
            if lsn != seen:
                seen = lsn
                self._notify()
            await asyncio.sleep(self.replay_poll_interval)

    async def _still_standby(self) -> bool:
        """Whether the server is still a hot standby (one query); turns the store into a
        primary's on the standby's promotion."""
        try:
            recovering = bool((await self._with_conn(replay_state)).recovering)
        except DRIVER_ERRORS:
            return True  # unreachable: still refuse, as a standby
        if not recovering:
            self._promoted()
        return recovering

    def _promoted(self) -> None:
        """The standby this store was opened on was promoted: take writes and LISTEN."""
        if not self.standby or self.closed:
            return
        self.standby = False
        self._health = StoreHealth(True, "ok: promoted from hot standby")
        self._feed = ChangeFeed(
            self.dsn, f"chronik.{self.schema}", self._notify, self.server_settings
        )
        self._feed.start()
        self._notify()

    async def _poll(self) -> None:
        """While subscriptions wait and LISTEN is down, wake them every poll_interval."""
        while self._watchers > 0 and not self.closed:
            await asyncio.sleep(self.poll_interval)
            if not self.listening:
                self._notify()


async def migrate_database(url: str) -> tuple[int, int]:
    """Create or upgrade the schema named by ``url`` (``chronik db migrate``).

    Returns the schema version before and after.
    """
    dsn, options = split_url(url)
    schema = options.get("schema", DEFAULT_SCHEMA)
    quote_schema(schema)
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except DRIVER_ERRORS as exc:
        raise StoreUnavailable(f"cannot connect to {safe_url(url)}: {exc}") from exc
    try:
        return await migrate(conn, schema)
    except DRIVER_ERRORS as exc:
        raise StoreUnavailable(f"migrating {safe_url(url)} failed: {exc}") from exc
    finally:
        await conn.close()
