"""Change notification between processes for the PostgreSQL store: LISTEN / NOTIFY.

One dedicated connection per store listens on the schema's channel and sends this store's
notifications. Writers never NOTIFY inside their own transaction (PostgreSQL serialises the
commits of notifying transactions on one lock, which would serialise every writer); instead,
after a commit, the feed sends one ``pg_notify`` for all commits since its last one, at most
one every NOTIFY_INTERVAL. The
connection reconnects with backoff when it is lost; while it is down the store polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any, Final

import asyncpg

from chronik.store.postgres.failover import HostList

__all__ = ["ChangeFeed"]

KEEPALIVE_SECONDS: Final = 5.0
#: At most one NOTIFY per this many seconds (each is a small transaction of its own).
NOTIFY_INTERVAL: Final = 0.005
MAX_BACKOFF: Final = 2.0


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
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.connected = False
        self.reconnects = 0

    def start(self) -> None:
        """Start the background task (connects, listens, reconnects)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        self._stopped = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def notify_soon(self) -> None:
        """Tell other processes about a commit (one NOTIFY for every commit until it is sent)."""
        self._pending = True
        self._wake.set()

    def _received(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload != self._token:
            self._on_change()

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
            if not self._pending:
                try:
                    await asyncio.wait_for(self._wake.wait(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    await conn.execute("SELECT 1")  # notice a dead connection
                    continue
            if lost.is_set() or self._stopped:
                break
            if self._pending:
                self._pending = False
                await conn.execute("SELECT pg_notify($1, $2)", self.channel, self._token)
                await asyncio.sleep(NOTIFY_INTERVAL)  # commits meanwhile share the next one
