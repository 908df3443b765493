"""The PostgreSQL transport: a message table, LISTEN/NOTIFY wake-ups, ``FOR UPDATE SKIP LOCKED``.

``postgresql://user@host/db?schema=chronik`` (options: ``schema``, ``pool_max_size``, ``lease``
seconds a claimed message stays with its consumer, ``dedup_window`` seconds, and the store's
server-side timeouts ``lock_timeout_ms``, ``idle_in_transaction_timeout_ms``,
``statement_timeout_ms``). Tables live in the schema, created on open by the store's migrator
(``MIGRATIONS``, recorded in ``transport_migrations``): ``transport_groups``, ``transport_messages``
(one row per group and message; deleted on ack), ``transport_ids`` (published ids, for dedup),
``transport_inbox`` (``PostgresInbox``). The store's ``ConnectionPool`` and ``errors`` serve it.

A consumer claims rows with ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)``,
setting a lease; a crashed consumer's rows come back when the lease ends. A row whose key has an
older row in the same group is not claimable, so per-key order holds even across competing
consumers. Acks are batched: a flusher deletes acknowledged rows (retrying across outages).
A publish NOTIFYs after its commit, coalesced (``feed.Notifier``: commits that NOTIFY serialise).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import asyncpg
import msgspec

from chronik.errors import (
    ChronikError,
    ConfigurationError,
    TransportClosed,
    TransportUnavailable,
)
from chronik.store.postgres.errors import DRIVER_ERRORS, transport_unavailable
from chronik.store.postgres.feed import Notifier
from chronik.store.postgres.pool import ConnectionPool, timeout_settings
from chronik.store.postgres.schema import migrate, quote_schema, split_url
from chronik.transports.base import Delivery, Incoming, Message, Source, Transport
from chronik.transports.inbox import Inbox

__all__ = ["MIGRATIONS", "PostgresInbox", "PostgresTransport"]

_WHAT = "PostgreSQL transport"
_OPTIONS: dict[str, Callable[[str], Any]] = {
    "schema": str,
    "pool_max_size": int,
    "lease": float,
    "dedup_window": float,
}
#: Seconds from a claim that came back short (not empty) to the next (a full one: at once): a
#: busy consumer claims batches, not a row per NOTIFY (W11: ~1 claim a message before).
CLAIM_LINGER: Final = 0.005
_json = msgspec.json.Encoder()
_headers = msgspec.json.Decoder(dict[str, str])

#: The transport's tables, by version (``{s}``: the quoted schema). Version 1 is what older
#: chronik releases created on open, hence IF NOT EXISTS: their tables are adopted as they are.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE IF NOT EXISTS {s}.transport_groups (
            topic text NOT NULL, grp text NOT NULL, PRIMARY KEY (topic, grp))""",
        """CREATE TABLE IF NOT EXISTS {s}.transport_messages (
            id bigserial, channel text NOT NULL, message_id text NOT NULL,
            topic text NOT NULL, key text, headers text NOT NULL, body bytea NOT NULL,
            attempts int NOT NULL DEFAULT 0,
            locked_until timestamptz NOT NULL DEFAULT '-infinity',
            PRIMARY KEY (channel, id))""",
        "CREATE INDEX IF NOT EXISTS transport_messages_key "
        "ON {s}.transport_messages (channel, key, id) WHERE key IS NOT NULL",
        """CREATE UNLOGGED TABLE IF NOT EXISTS {s}.transport_ids (
            dest text NOT NULL, message_id text NOT NULL, at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (dest, message_id))""",
        """CREATE TABLE IF NOT EXISTS {s}.transport_inbox (
            consumer text NOT NULL, message_id text NOT NULL,
            at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, message_id))""",
    ],
}
MIGRATIONS_TABLE = "transport_migrations"


class PostgresTransport(Transport):
    """Messages in PostgreSQL tables; any number of processes may share a schema."""

    scheme = "postgresql"
    dedupes = True
    orders_across_consumers = True

    def __init__(
        self,
        url: str,
        *,
        schema: str = "chronik",
        pool_max_size: int = 10,
        lease: float = 30.0,
        dedup_window: float = 120.0,
        **options: int,
    ) -> None:
        super().__init__(url, **options)
        dsn, query = split_url(url, _OPTIONS, "transport")
        # the store's server-side timeouts (URL options), on every connection but LISTEN's
        self.dsn, self.server_settings = timeout_settings(dsn, {})
        self.schema = query.get("schema", schema)
        self.pool_max_size = int(query.get("pool_max_size", pool_max_size))
        self.lease = float(query.get("lease", lease))
        self.dedup_window = float(query.get("dedup_window", dedup_window))
        if not 1 <= self.pool_max_size <= 1000 or self.lease <= 0 or self.dedup_window < 0:
            raise ConfigurationError("need pool_max_size 1..1000, lease > 0, dedup_window >= 0")
        s = quote_schema(self.schema)  # the store's rule: [a-z_][a-z0-9_]{0,62}
        self.notify_channel = f"chronik_transport_{self.schema}"
        self._pool: ConnectionPool | None = None
        self._consumer_pool: ConnectionPool | None = None
        self._listener: asyncpg.Connection | None = None
        self._wakers: dict[str, set[asyncio.Event]] = {}
        self._consuming = asyncio.Event()  # set by the first source: LISTEN from then on
        self._watch: asyncio.Task[None] | None = None
        # A published id is remembered for dedup_window (until the next purge after it);
        # dedup_window=0 turns deduplication off.
        fresh = (
            f"WITH fresh AS (INSERT INTO {s}.transport_ids (dest, message_id) VALUES ($6, $2) "
            "ON CONFLICT (dest, message_id) DO NOTHING RETURNING 1), "
            if self.dedup_window > 0
            else "WITH fresh AS (SELECT $6::text), "
        )
        self._publish_sql = fresh + (
            f"ins AS (INSERT INTO {s}.transport_messages "
            "(channel, message_id, topic, key, headers, body) "
            "SELECT 't:' || g.topic || '/' || g.grp, $2, $1, $3, $4, $5 "
            f"FROM {s}.transport_groups g WHERE g.topic = $1 AND EXISTS (SELECT 1 FROM fresh) "
            "RETURNING channel) SELECT DISTINCT channel FROM ins"
        )
        self._send_sql = fresh + (
            f"ins AS (INSERT INTO {s}.transport_messages "
            "(channel, message_id, topic, key, headers, body) "
            "SELECT $6, $2, $1, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM fresh) RETURNING channel) "
            "SELECT channel FROM ins"
        )
        self._claim_sql = (
            f"UPDATE {s}.transport_messages m SET attempts = m.attempts + 1, "
            "locked_until = now() + make_interval(secs => $3) WHERE m.channel = $1 AND m.id IN ("
            f"SELECT c.id FROM {s}.transport_messages c WHERE c.channel = $1 "
            "AND c.locked_until <= now() AND (c.key IS NULL OR NOT EXISTS ("
            f"SELECT 1 FROM {s}.transport_messages o WHERE o.channel = c.channel "
            "AND o.key = c.key AND o.id < c.id)) ORDER BY c.id LIMIT $2 FOR UPDATE SKIP LOCKED) "
            "RETURNING m.id, m.message_id, m.topic, m.key, m.headers, m.body, m.attempts"
        )
        self._ack_sql = (
            f"DELETE FROM {s}.transport_messages WHERE channel = $1 AND id = ANY($2::bigint[])"
        )
        self._release_sql = (
            f"UPDATE {s}.transport_messages SET locked_until = '-infinity' "
            "WHERE channel = $2 AND id = $1"
        )
        self._touch_sql = (
            f"UPDATE {s}.transport_messages SET locked_until = now() + "
            "make_interval(secs => $2) WHERE channel = $3 AND id = $1"
        )
        self._group_sql = (
            f"INSERT INTO {s}.transport_groups (topic, grp) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        )
        self._purge_sql = (
            f"DELETE FROM {s}.transport_ids WHERE at < now() - "
            f"make_interval(secs => {self.dedup_window})"
        )
        self.inbox_sql = (
            f"INSERT INTO {s}.transport_inbox (consumer, message_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING true"
        )

    # --- lifecycle -----------------------------------------------------------------------------

    async def _open(self) -> None:
        pool = ConnectionPool(self.dsn, 1, self.pool_max_size, server_settings=self.server_settings)
        self._pool = pool
        self._notifier = Notifier(self.notify_channel, pool.execute)
        try:
            await pool.open()
            async with pool.connection() as conn:
                # A migration may wait for another process's and take long: no timeouts.
                await conn.execute("SET lock_timeout = 0; SET statement_timeout = 0")
                await migrate(conn, self.schema, MIGRATIONS, MIGRATIONS_TABLE)
                await conn.execute("RESET lock_timeout; RESET statement_timeout")
        except ChronikError:  # e.g. tables newer than this chronik
            await pool.close()
            raise
        except DRIVER_ERRORS as exc:
            pool.terminate()
            raise transport_unavailable(_WHAT, exc) from exc
        self._watch = asyncio.get_running_loop().create_task(self._keep_listening())

    async def _close(self) -> None:
        await self._notifier.close()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(BaseException):
                await self._watch
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
        for pool in (self._consumer_pool, self._pool):
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), 5)
                except (TimeoutError, *DRIVER_ERRORS):
                    pool.terminate()

    async def _keep_listening(self) -> None:
        """Purge old published ids; once a source starts, LISTEN too (reconnects after outages)."""
        purge_every = max(1.0, self.dedup_window / 4)
        while True:
            try:
                until = self._consuming  # publishing only: purge until a source starts
                if until.is_set():
                    self._listener = conn = await asyncpg.connect(self.dsn)
                    until = asyncio.Event()
                    conn.add_termination_listener(lambda _conn, lost=until: lost.set())
                    await conn.add_listener(self.notify_channel, self._notified)
                    self._wake_all()
                while not until.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(until.wait(), purge_every)
                    if not until.is_set():
                        await self._pool_execute(self._purge_sql)
                if self._listener is None:
                    continue  # a source started: LISTEN now
            except asyncio.CancelledError:
                raise
            except (*DRIVER_ERRORS, TransportUnavailable):
                pass
            self._listener = None
            await asyncio.sleep(0.2)

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for event in self._wakers.get(payload, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._wakers.values():
            for event in events:
                event.set()

    def pool(self) -> ConnectionPool:
        """The connection pool (for ``PostgresInbox``): ``fetch``, ``execute``, ``connection()``."""
        if self._pool is None or self.closed:
            raise TransportClosed(f"{self!r} is closed")
        return self._pool

    async def _pool_execute(self, sql: str, *args: Any, consumer: bool = False) -> Any:
        pool = self.pool()  # raises TransportClosed once closed
        pool = self._consumer_pool if consumer and self._consumer_pool is not None else pool
        try:
            return await pool.fetch(sql, *args)
        except DRIVER_ERRORS as exc:
            raise transport_unavailable(_WHAT, exc, unknown=True) from exc

    # --- primitives ----------------------------------------------------------------------------

    async def _publish(self, message: Message) -> None:
        await self._put(self._publish_sql, message, f"t:{message.topic}")

    async def _send(self, message: Message) -> None:
        await self._put(self._send_sql, message, f"q:{message.topic}")

    async def _put(self, sql: str, m: Message, dest: str) -> None:
        headers = _json.encode(m.headers).decode()
        rows = await self._pool_execute(sql, m.topic, m.id, m.key, headers, m.body, dest)
        self._notifier.add([r[0] for r in rows])  # its channels, NOTIFYed after the commit

    async def _source(
        self, kind: Literal["topic", "queue"], name: str, group: str, prefetch: int
    ) -> Source:
        if self._consumer_pool is None:
            # Claims, acks and releases commit without waiting for the WAL flush: one lost in
            # a crash only means a redelivery. Publishes stay synchronous.
            unsynced = {**self.server_settings, "synchronous_commit": "off"}
            size = max(2, self.pool_max_size // 2)
            pool = ConnectionPool(self.dsn, 1, size, server_settings=unsynced)
            try:
                await pool.open()
            except DRIVER_ERRORS as exc:
                pool.terminate()
                raise transport_unavailable(_WHAT, exc) from exc
            if self._consumer_pool is None:
                self._consumer_pool = pool
            else:
                await pool.close()
        if kind == "topic":
            await self._pool_execute(self._group_sql, name, group)
            channel = f"t:{name}/{group}"
        else:
            channel = f"q:{name}"
        return _PostgresSource(self, channel, group)


def _incoming(r: Any) -> Incoming:
    """A claimed row as a delivery (its token: the row id)."""
    m = Message(topic=r[2], body=r[5], id=r[1], headers=_headers.decode(r[4]), key=r[3])
    return Incoming(m, r[6], r[0])


class _PostgresSource(Source):
    def __init__(self, transport: PostgresTransport, channel: str, group: str) -> None:
        self.t = transport
        self.channel = channel
        self.wake = asyncio.Event()
        self.t._wakers.setdefault(channel, set()).add(self.wake)
        self.t._consuming.set()
        self.acks: list[int] = []
        self.touch_interval = transport.lease / 3
        self.keyed = False
        self.flusher: asyncio.Task[None] | None = None
        self.next_claim = 0.0  # loop time before which no claim runs (CLAIM_LINGER)

    async def fetch(self, limit: int, wait: float) -> list[Incoming]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            flusher = self.flusher
            if flusher is not None and not flusher.done():
                # claim once the acks are written: fewer, larger claims (as a plain loop does)
                await asyncio.wait({flusher}, timeout=max(0.0, deadline - loop.time()))
            if (linger := min(self.next_claim, deadline) - loop.time()) > 0:
                await asyncio.sleep(linger)
            self.wake.clear()
            start = loop.time()
            rows = await self.t._pool_execute(
                self.t._claim_sql, self.channel, limit, self.t.lease, consumer=True
            )
            self.next_claim = start + CLAIM_LINGER if 0 < len(rows) < limit else 0.0
            if rows:
                rows.sort(key=lambda r: r[0])
                return [_incoming(r) for r in rows]
            left = deadline - loop.time()
            if left <= 0:
                return []
            try:
                await asyncio.wait_for(self.wake.wait(), left)
            except TimeoutError:
                return []

    async def ack(self, incoming: Incoming) -> None:
        self.acks.append(incoming.token)
        self.keyed = self.keyed or incoming.message.key is not None
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Delete acknowledged rows in batches; across an outage, keep them and retry."""
        pause = 0.05
        while self.acks:
            ids, self.acks = self.acks, []
            try:
                await self.t._pool_execute(self.t._ack_sql, self.channel, ids, consumer=True)
                pause = 0.05
            except TransportUnavailable:
                self.acks = ids + self.acks
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)
            except TransportClosed:
                return
        if self.keyed:  # the next message of a key may be claimable now
            self.keyed = False
            self.wake.set()

    async def release(self, incoming: Incoming) -> None:
        await self.t._pool_execute(self.t._release_sql, incoming.token, self.channel, consumer=True)

    async def touch(self, incoming: Incoming) -> None:
        await self.t._pool_execute(
            self.t._touch_sql, incoming.token, self.t.lease, self.channel, consumer=True
        )

    async def close(self) -> None:
        self.t._wakers.get(self.channel, set()).discard(self.wake)
        if self.flusher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.flusher), 5)


class PostgresInbox(Inbox[asyncpg.Connection]):
    """Processed ids in ``transport_inbox``: ``fn(delivery, connection)`` runs inside the
    transaction that recorded the id, so the handler's writes and the record commit together."""

    def __init__(self, transport: PostgresTransport, consumer: str) -> None:
        super().__init__(consumer)
        self.transport = transport

    async def _run(
        self,
        delivery: Delivery,
        fn: Callable[[Delivery, asyncpg.Connection], Awaitable[Any]],
    ) -> bool:
        await self.transport._ready()
        try:
            async with self.transport.pool().connection() as conn, conn.transaction():
                if not await conn.fetchval(self.transport.inbox_sql, self.consumer, delivery.id):
                    return False
                await fn(delivery, conn)
                return True
        except DRIVER_ERRORS as exc:
            raise transport_unavailable("PostgreSQL inbox", exc, unknown=True) from exc
