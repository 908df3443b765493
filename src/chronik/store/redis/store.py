"""The Redis event store (``redis://[user:pass@]host:port/db?prefix=chronik``).

The adapter assembles the package: ``write`` (a unit of work as one call of the write script,
``lua_write``), ``read`` and ``tables`` (pages in one round trip), ``feed`` (pub/sub between
processes), ``options`` (the URL) and ``errors``. A pool of connections serves any number of
concurrent callers; no unit ever holds a connection across two calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Final

import redis.asyncio
import redis.exceptions

from chronik.adapters import safe_url
from chronik.errors import ChronikError, ConfigurationError, StoreUnavailable
from chronik.messages import AppendResult
from chronik.store.base import EventStore
from chronik.store.records import TableWrite, WriteUnit, match_duplicate, unit_error
from chronik.store.redis.errors import DRIVER_ERRORS, write_failed
from chronik.store.redis.feed import ChangeFeed
from chronik.store.redis.lua_write import WRITE
from chronik.store.redis.options import RedisOptions, durability_problem
from chronik.store.redis.read import RedisReader
from chronik.store.redis.scripts import Script, command
from chronik.store.redis.tables import read_table
from chronik.store.redis.write import Retry, outcome, unit_args
from chronik.store.system_tables import SYSTEM_TABLES
from chronik.store.tables import Condition

__all__ = ["RedisEventStore"]

_log = logging.getLogger("chronik.store.redis")
_WRITE: Final = Script("write", WRITE)


class RedisEventStore(RedisReader, EventStore):
    """An event store under one key prefix of a Redis server; any number of processes may
    share it (no Redis Cluster: the store's keys live on one server)."""

    supports_tables = True
    head_bounds_reads = True  # positions are taken in commit order, inside the write script

    def __init__(self, url: str, **options: Any) -> None:
        """Options (keywords win over the URL's query string): ``prefix`` (``chronik``),
        ``appendfsync`` (``always`` or ``everysec``: the fsync policy the server must have at
        least), ``require_aof`` (refuse a server without AOF instead of warning),
        ``pool_max_size`` (32), ``poll_interval`` (0.2 s, while pub/sub is down),
        ``max_payload_bytes``, ``max_append_events``."""
        self.options = RedisOptions.parse(url, options)
        super().__init__(**self.options.limits)
        self.url = url
        self.prefix = self.options.prefix
        self.poll_interval = self.options.poll_interval
        #: The server's (appendonly, appendfsync) as found at open (None: not readable).
        self.durability: tuple[str, str] | None = None
        self._token = os.urandom(8).hex()
        self._init_reader()
        self._watchers = 0
        self._poll_task: asyncio.Task[None] | None = None
        self._feed: ChangeFeed | None = None

    def __repr__(self) -> str:
        return f"<RedisEventStore {safe_url(self.url)} prefix={self.prefix} {self._state}>"

    # --- lifecycle ----------------------------------------------------------------------------

    def _pool(self, max_connections: int) -> redis.asyncio.BlockingConnectionPool:
        return redis.asyncio.BlockingConnectionPool.from_url(  # the URL's own settings win
            self.options.server_url,
            max_connections=max_connections,
            timeout=20,
            socket_connect_timeout=5,
        )

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = redis.asyncio.Redis(connection_pool=self._pool(self.options.pool_max_size))
        try:
            await command(self._client, "PING")
            await self._check_durability()
            await self._write(  # chronik's own tables, as the SQL adapters' migrations
                WriteUnit(
                    [], [], [], tables=[TableWrite("ensure", s.name, spec=s) for s in SYSTEM_TABLES]
                )
            )
        except BaseException as exc:
            await self._client.aclose(close_connection_pool=True)
            if isinstance(exc, ChronikError) or not isinstance(exc, DRIVER_ERRORS):
                raise
            raise StoreUnavailable(f"cannot open {safe_url(self.url)}: {exc}") from exc
        self._feed = ChangeFeed(
            lambda: self._pool(1), self.key("changes"), self._token, self._notify
        )
        self._feed.start()

    async def _check_durability(self) -> None:
        """Warn about (or, as the options say, refuse) a server that may lose acked writes."""
        try:
            found: list[str] = []
            for name in ("appendonly", "appendfsync"):
                reply = await command(self._client, "CONFIG", "GET", name)
                found.append(_config_value(reply, name))
            self.durability = (found[0], found[1])
        except redis.exceptions.ResponseError as exc:  # CONFIG renamed or not allowed
            problem: str | None = f"cannot read the server's AOF settings ({exc})"
        else:
            problem = durability_problem(found[0], found[1], self.options.appendfsync)
        if problem is None:
            return
        if self.options.require_aof or self.options.appendfsync is not None:
            raise ConfigurationError(f"{safe_url(self.url)}: {problem}")
        _log.warning("%s: %s; acknowledged appends may be lost", safe_url(self.url), problem)

    async def _close(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
        if self._feed is not None:
            await self._feed.stop()
        await self._client.aclose(close_connection_pool=True)

    # --- writing ------------------------------------------------------------------------------

    async def _write(self, unit: WriteUnit) -> list[AppendResult]:
        try:
            self._steps(unit)
        except BaseException as exc:
            error = unit_error(exc, f"writing to {safe_url(self.url)}")
            if error is exc:
                raise
            raise error from exc
        resolved: dict[int, AppendResult] = {}
        while True:
            args = unit_args(self.prefix, self._token, unit, set(resolved))
            try:
                results = outcome(unit, await _WRITE(self._client, args), resolved)
            except Retry as retry:  # an append stored already: its original result
                req = unit.appends[retry.index]
                stored = await self._stored([e.event_id for e in req.events])
                resolved[retry.index] = match_duplicate(req, stored)
                continue
            except ChronikError:
                raise
            except BaseException as exc:
                error = write_failed(self.url, exc)
                if isinstance(error, StoreUnavailable):
                    self._write_failed(error)
                if error is exc:
                    raise
                raise error from exc
            self._write_succeeded()
            if len(resolved) < len(unit.appends):
                self._notify()
            return results

    def _steps(self, unit: WriteUnit) -> None:
        """The fault hook's steps of a unit: all before the one call that writes it."""
        hook = self.fault_hook
        if hook is None:
            return
        hook("begin", unit)
        if unit.checkpoints:
            hook("checkpoint", unit)
        for _ in unit.appends:
            hook("append", unit)
        if unit.tables or unit.leases:
            hook("tables", unit)
        if unit.snapshots:
            hook("snapshot", unit)
        hook("commit", unit)

    async def _read_table(
        self,
        table: str,
        where: tuple[Condition, ...],
        order_by: tuple[tuple[str, bool], ...],
        limit: int | None,
        after: tuple[Any, ...] | None,
    ) -> list[dict[str, Any]]:
        return await read_table(
            self._client, self.prefix, self._run, table, where, order_by, limit, after
        )

    # --- cross-process notification -----------------------------------------------------------

    @property
    def listening(self) -> bool:
        """True while the pub/sub connection is up (else subscriptions poll)."""
        return self._feed is not None and self._feed.connected

    def _watch(self, delta: int) -> None:
        self._watchers += delta
        if self._watchers > 0 and (self._poll_task is None or self._poll_task.done()):
            self._poll_task = self._loop.create_task(self._poll())

    async def _poll(self) -> None:
        """While subscriptions wait and pub/sub is down, look at the head every poll_interval."""
        seen = None
        while self._watchers > 0 and not self.closed:
            await asyncio.sleep(self.poll_interval)
            if self.listening:
                seen = None
                continue
            try:
                head = await command(self._client, "GET", self.key("seq"))
            except Exception:  # the server is away: wake readers, they see the outage
                head = None
            if head is None or head != seen:
                seen = head
                self._notify()


def _config_value(reply: Any, name: str) -> str:
    """One value of a CONFIG GET reply (a dict, or RESP2 pairs)."""
    if isinstance(reply, dict):
        value = reply.get(name.encode(), reply.get(name))
    else:
        pairs = dict(zip(reply[::2], reply[1::2], strict=True))
        value = pairs.get(name.encode(), pairs.get(name))
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
