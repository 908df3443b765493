"""Change notification between processes for the PostgreSQL store: LISTEN / NOTIFY.

One dedicated connection per store listens on the schema's channel and sends this store's
notifications. Writers never NOTIFY inside their own transaction (PostgreSQL serialises the
commits of notifying transactions on one lock, which would serialise every writer); instead,
after a commit, the feed sends one ``pg_notify`` for all commits since its last one, at most
one every NOTIFY_INTERVAL. The
connection reconnects with backoff when it is lost; while it is down the store polls.

The pacing leans on commits, not on a timer: a commit that finds the interval over wakes the
feed at once. On a busy event loop (many appenders on few cores) a 5 ms ``asyncio.sleep``
overshot by 15-30 ms, and every commit in that time waited for it (the append-to-subscriber
p99 under W5); the timer now only sends the last notification of a burst.

The listening side echoes: a NOTIFY from another process wakes the readers at once and again
2, 6 and 14 ms later (ECHOES; the next NOTIFY restarts them), so commits made just after a
writer sent its NOTIFY, or while a busy writer's next one is late, are read without waiting
for it. Each echo is one read only while notifications come; none once they stop (the W5
x32 latency run's subscriber: ~1.8x the reads, append-to-subscriber p99 ~11-12 -> ~6-7 ms).

``Notifier`` does the same for the PostgreSQL transport, whose payloads (the channels
published to) matter: one statement per interval NOTIFYs every channel written since the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import asyncpg

from chronik.store.postgres.failover import HostList

__all__ = ["ChangeFeed", "Notifier"]

KEEPALIVE_SECONDS: Final = 5.0
#: At most one NOTIFY per this many seconds (each is a small transaction of its own).
NOTIFY_INTERVAL: Final = 0.005
MAX_BACKOFF: Final = 2.0
#: After another process's NOTIFY, readers are woken again this many seconds apart (a new
#: NOTIFY starts over): what committed after that NOTIFY was sent needs no wait for the next.
ECHOES: Final = (0.002, 0.004, 0.008)
#: Notifier's statement: ``$1`` the channel, ``$2`` the payloads.
NOTIFY_MANY: Final = (
    "SELECT pg_notify($1, p), set_config('synchronous_commit', 'off', true) "
    "FROM unnest($2::text[]) AS p"
)


class Notifier:
    """NOTIFYs ``channel`` with the payloads ``add``ed after their commits, coalesced: at most
    one statement (``execute(NOTIFY_MANY, channel, payloads)``, a pool's) per NOTIFY_INTERVAL,
    paced by the commits as ``ChangeFeed`` is; a task runs only while payloads wait. A failed
    statement loses its wake-ups: readers also poll."""

    def __init__(self, channel: str, execute: Callable[..., Awaitable[Any]]) -> None:
        self.channel = channel
        self._execute = execute
        self._pending: set[str] = set()
        self._next_at = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, payloads: Iterable[str]) -> None:
        """NOTIFY these payloads soon (after the commit that wrote what they announce)."""
        self._pending.update(payloads)
        if self._task is None or self._task.done():
            if self._pending:
                self._task = asyncio.get_running_loop().create_task(self._run())
        elif asyncio.get_running_loop().time() >= self._next_at:
            self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if (wait := self._next_at - loop.time()) > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            payloads, self._pending = sorted(self._pending), set()
            self._next_at = loop.time() + NOTIFY_INTERVAL
            with contextlib.suppress(Exception):
                await self._execute(NOTIFY_MANY, self.channel, payloads)

    async def close(self) -> None:
        """Send what waits (for up to 2 s), then stop."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 2.0)


class ChangeFeed:
    """LISTEN for other processes' commits; NOTIFY ours, coalesced; reconnect when lost."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_change: Callable[[], None],
        server_settings: dict[str, str] | None = None,
    ) -> None:
        self._dsn = dsn
        self._server_settings = {**(server_settings or {}), "synchronous_commit": "off"}
        self.channel = channel
        self._on_change = on_change
        self._hosts = HostList(dsn, 5)  # after a failover: the new primary
        self._token = os.urandom(8).hex()  # our own notifications carry it and are ignored
        self._pending = False
        self._next_at = 0.0  # loop time before which no NOTIFY is sent (NOTIFY_INTERVAL)
        self._time = time.monotonic  # the loop's clock, once started
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.connected = False
        self.reconnects = 0
        self._echo_at: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start the background task (connects, listens, reconnects)."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._time = loop.time
            self._task = loop.create_task(self._run())

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        self._stopped = True
        self._wake.set()
        self._echo(len(ECHOES))  # no more echoes
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def notify_soon(self) -> None:
        """Tell other processes about a commit (one NOTIFY for every commit until it is sent):
        wakes the feed for the first commit after a NOTIFY (it waits out the interval then) and
        for any once the interval is over."""
        if not self._pending or self._time() >= self._next_at:
            self._wake.set()
        self._pending = True

    def _received(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload != self._token:
            self._on_change()
            self._echo(0)

    def _echo(self, k: int) -> None:
        """Wake readers again ECHOES[k] from now (none past the last), replacing a pending one."""
        if self._echo_at is not None:
            self._echo_at.cancel()
            self._echo_at = None
        if k < len(ECHOES):
            self._echo_at = asyncio.get_running_loop().call_later(ECHOES[k], self._echoed, k)

    def _echoed(self, k: int) -> None:
        self._echo_at = None
        self._on_change()
        self._echo(k + 1)

    async def _run(self) -> None:
        attempt = 0
        while not self._stopped:
            try:
                # A notification needs no durability: its commit need not wait for a WAL flush.
                conn = await self._hosts.connect(server_settings=self._server_settings)
            except Exception:  # any failure to connect: back off and retry
                await asyncio.sleep(min(MAX_BACKOFF, 0.05 * 2**attempt))
                attempt += 1
                continue
            attempt = 0
            try:
                await self._serve(conn)
            except Exception:  # the connection broke: reconnect
                pass
            finally:
                self.connected = False
                conn.terminate()
            if not self._stopped:
                self.reconnects += 1
                self._on_change()  # wake readers: they re-read (and notice an outage)

    async def _serve(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()

        def on_lost(_conn: Any) -> None:
            lost.set()
            self._wake.set()

        conn.add_termination_listener(on_lost)
        await conn.add_listener(self.channel, self._received)
        self.connected = True
        self._on_change()  # anything committed while we were not listening
        while not self._stopped and not lost.is_set():
            self._wake.clear()
            wait = self._next_at - self._time() if self._pending else KEEPALIVE_SECONDS
            if wait > 0:
                # until a commit after the interval wakes us, or the interval ends (pending)
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except TimeoutError:
                    if not self._pending:
                        await conn.execute("SELECT 1")  # notice a dead connection
                continue
            if lost.is_set() or self._stopped:
                break
            # commits from now on share the next NOTIFY, NOTIFY_INTERVAL after this one's start
            self._pending = False
            self._next_at = self._time() + NOTIFY_INTERVAL
            await conn.execute("SELECT pg_notify($1, $2)", self.channel, self._token)
