"""The PostgreSQL event store (``postgresql://user@host:5432/db?schema=chronik``).

asyncpg with a connection pool. An append is one round trip: a server-side function
(``append_event``, or ``append_events`` for several) takes the stream's advisory lock (writers
to other streams never wait), checks the expectation and inserts the events, in autocommit. A
unit of work locks all its streams first, then runs the same functions inside one transaction,
with its checkpoints and snapshots. Positions are
``(transaction id, row id)``; readers stop at the safe horizon (see ``postgres_schema``), so no
reader passes a transaction that may still commit.

URL options: ``schema`` (default ``chronik``), ``migrate`` (default true: create or upgrade the
schema on open), ``pool_min_size``, ``pool_max_size``, ``poll_interval`` (seconds between
polls while LISTEN is down), ``max_payload_bytes``, ``max_append_events``, and the server-side
timeouts every connection of the store sets (milliseconds, 0 turns one off):
``lock_timeout_ms`` (default 5000: a statement waiting longer for a lock fails),
``idle_in_transaction_timeout_ms`` (default 30000: the server ends a session that sits inside
a transaction that long, e.g. a frozen or partitioned process, releasing its locks and the
readers' horizon) and ``statement_timeout_ms`` (default 30000; migrations run without it).
Other query parameters go to the driver (``sslmode``, ...).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import asyncpg

from chronik.errors import (
    ChronikError,
    ConfigurationError,
    StoreUnavailable,
    ValidationError,
    WrongExpectedVersion,
)
from chronik.messages import (
    ANY,
    JSON,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Position,
    StreamId,
)
from chronik.store.base import (
    AppendRequest,
    EventStore,
    PreparedEvent,
    StoredEvent,
    WriteUnit,
    match_duplicate,
    unit_error,
)
from chronik.store.postgres.feed import ChangeFeed
from chronik.store.postgres.pool import ConnectionPool
from chronik.store.postgres.read import (
    DRIVER_ERRORS,
    HORIZON,
    HorizonLag,
    PostgresReader,
    is_connection_error,
    safe_url,
)
from chronik.store.postgres.schema import (
    DEFAULT_SCHEMA,
    SCHEMA_VERSION,
    lock_class,
    migrate,
    quote_schema,
    schema_version,
    split_url,
)
from chronik.store.postgres.write import Retry, write_unit

__all__ = ["HorizonLag", "PostgresEventStore", "migrate_database"]

MAX_ATTEMPTS: Final = 8
#: Server-side timeouts (URL option -> (PostgreSQL setting, default in ms)).
TIMEOUTS: Final = {
    "lock_timeout_ms": ("lock_timeout", 5000),
    "idle_in_transaction_timeout_ms": ("idle_in_transaction_session_timeout", 30000),
    "statement_timeout_ms": ("statement_timeout", 30000),
}
_EXPECT: Final = {ANY: -1, NO_STREAM: -2, STREAM_EXISTS: -3}


class PostgresEventStore(PostgresReader, EventStore):
    """An event store in one PostgreSQL schema; any number of processes may share it."""

    supports_tables = True  # read-model tables and leases: chronik.store.postgres.tables

    # head() is the safe head: every event at or before it is final (no transaction that may
    # still commit sorts before it), so a filtered reader that found nothing of its own up to
    # the head may skip there, as on memory and SQLite.
    head_bounds_reads = True

    def __init__(self, url: str, **options: Any) -> None:
        """Options (keywords win over the URL's query string): ``schema`` (default
        ``chronik``), ``migrate`` (default True), ``pool_min_size`` (2), ``pool_max_size``
        (16), ``poll_interval`` (0.2 s), ``max_payload_bytes``, ``max_append_events``,
        ``lock_timeout_ms`` (5000), ``idle_in_transaction_timeout_ms`` (30000),
        ``statement_timeout_ms`` (30000)."""
        dsn, from_url = split_url(url)
        dsn, timeouts = split_url(dsn, dict.fromkeys(TIMEOUTS, int))
        settings: dict[str, Any] = {
            "schema": DEFAULT_SCHEMA,
            "migrate": True,
            "pool_max_size": 16,
            "poll_interval": 0.2,
            **from_url,
            **options,
        }
        schema = settings.pop("schema")
        self.server_settings: dict[str, str] = {}
        for option, (setting, default) in TIMEOUTS.items():
            value = int(settings.pop(option, timeouts.get(option, default)))
            if value < 0:
                raise ConfigurationError(f"{option} must be >= 0 (0: no timeout), not {value}")
            self.server_settings[setting] = str(value)
        self.auto_migrate = bool(settings.pop("migrate"))
        self.pool_max_size = int(settings.pop("pool_max_size"))
        self.pool_min_size = int(settings.pop("pool_min_size", min(2, self.pool_max_size)))
        self.poll_interval = float(settings.pop("poll_interval"))
        super().__init__(**settings)
        self.url = url
        self.dsn = dsn
        self.schema = schema
        self._s = quote_schema(schema)
        self.lock_class = lock_class(schema)
        if not 1 <= self.pool_min_size <= self.pool_max_size:
            raise ConfigurationError("need 1 <= pool_min_size <= pool_max_size")
        self._append_sql = (
            f"SELECT o_status, o_actual, o_xid, o_ids FROM {self._s}.append_events"
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )
        self._append_one_sql = (
            f"SELECT o_status, o_actual, o_xid, o_id FROM {self._s}.append_event"
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )
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
            raise self._unavailable("connecting", exc) from exc
        try:
            conn = await self._pool.acquire()
            try:
                # A migration may wait for another process's and take long: no timeouts.
                await conn.execute("SET lock_timeout = 0; SET statement_timeout = 0")
                if self.auto_migrate:
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
            raise self._unavailable("migrating", exc) from exc
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
                raise self._unavailable("connecting", exc) from exc
            broken = True
            try:
                results = await write_unit(self, conn, unit, resolved)
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
                if is_connection_error(exc):
                    raise self._unavailable("write", exc, unknown=True) from exc
                broken = not isinstance(exc, asyncpg.PostgresError)
                if isinstance(exc, asyncpg.DataError):  # e.g. a NUL character in a text value
                    raise ValidationError(f"PostgreSQL refused a value: {exc}") from exc
                if isinstance(exc, asyncpg.PostgresError):
                    raise self._unavailable("write", exc) from exc
                error = unit_error(exc, f"write on {safe_url(self.url)}")
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

    def append_call(self, req: AppendRequest, now: int) -> tuple[str, tuple[Any, ...]]:
        """The statement (append_event for one event, append_events for more) and its args."""
        st, events = req.stream, req.events
        expected = req.expected
        code = _EXPECT[expected] if not isinstance(expected, int) else expected
        if len(events) == 1:
            e = events[0]
            return self._append_one_sql, (
                st.tenant,
                st.domain,
                st.aggregate_id,
                code,
                e.event_id,
                e.type,
                e.schema_version,
                e.payload,
                e.metadata,
                None if e.content_type == JSON else e.content_type,
                now,
            )
        return self._append_sql, (
            st.tenant,
            st.domain,
            st.aggregate_id,
            code,
            [e.event_id for e in events],
            [e.type for e in events],
            [e.schema_version for e in events],
            [e.payload for e in events],
            [e.metadata for e in events],
            [None if e.content_type == JSON else e.content_type for e in events],
            now,
        )

    async def append_on(
        self, conn: asyncpg.Connection, req: AppendRequest, now: int
    ) -> AppendResult:
        """Run the append function for one request on ``conn`` (in a transaction or not)."""
        sql, args = self.append_call(req, now)
        status, actual, xid, ids = await conn.fetchrow(sql, *args)
        if status == 0:
            first = 0 if actual is None else actual + 1
            if type(ids) is int:
                pos = Position(xid, ids)
                return AppendResult(req.stream, first, first, pos, (pos,), now)
            positions = tuple([Position(xid, i) for i in ids])
            return AppendResult(
                req.stream, first, first + len(req.events) - 1, positions[-1], positions, now
            )
        dup = await self.find_duplicate(conn, [req])
        if 0 in dup:
            return dup[0]
        raise WrongExpectedVersion(req.stream, req.expected, actual)

    async def find_duplicate(
        self, conn: asyncpg.Connection, requests: list[AppendRequest]
    ) -> dict[int, AppendResult]:
        """The original results of requests whose event ids are stored (DuplicateEventError
        if one only partly matches), by index in ``requests``."""
        ids = [e.event_id for r in requests for e in r.events]
        rows = await conn.fetch(
            "SELECT e.event_id, e.type, e.schema_version, e.payload, e.metadata, "
            "e.content_type, s.tenant, s.domain, s.aggregate_id, e.sequence, e.xid, e.id, "
            "e.recorded_at "
            f"FROM {self._s}.events e JOIN {self._s}.streams s ON s.id = e.stream_id "
            "WHERE e.event_id = ANY($1::text[])",
            ids,
        )
        by_id = {r[0]: r for r in rows}
        out: dict[int, AppendResult] = {}
        for i, req in enumerate(requests):
            stored = []
            for e in req.events:
                r = by_id.get(e.event_id)
                if r is not None:
                    old = PreparedEvent(r[0], r[1], r[2], r[3], r[4], r[5] or JSON)
                    stream = StreamId(r[7], r[8], r[6])
                    stored.append(StoredEvent(old, stream, r[9], Position(r[10], r[11]), r[12]))
            if stored:
                out[i] = match_duplicate(req, stored)
        return out

    @staticmethod
    def now_us() -> int:
        """The current time in microseconds (recorded_at)."""
        return time.time_ns() // 1000

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

    def _watch(self, delta: int) -> None:
        self._watchers += delta
        if self._watchers > 0 and (self._poll_task is None or self._poll_task.done()):
            self._poll_task = self._loop.create_task(self._poll())

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
