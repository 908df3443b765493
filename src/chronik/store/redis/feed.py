"""Change notification between processes for the Redis store: pub/sub.

The write script PUBLISHes on ``{prefix}:changes`` whenever it appends (the payload is the
writing store's token, so a store ignores its own). One dedicated connection per store
subscribes and wakes the store's readers; it reconnects with backoff when lost, waking the
readers each time (they re-read and notice an outage), and the store polls while it is down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Final

import redis.asyncio

__all__ = ["ChangeFeed"]

KEEPALIVE_SECONDS: Final = 5.0
MAX_BACKOFF: Final = 2.0


class ChangeFeed:
    """SUBSCRIBE to the store's channel; call ``on_change`` for other writers' commits."""

    def __init__(
        self,
        pool_factory: Callable[[], Any],
        channel: str,
        token: str,
        on_change: Callable[[], None],
    ) -> None:
        self._pool_factory = pool_factory
        self.channel = channel
        self._token = token.encode()
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.connected = False
        self.reconnects = 0

    def start(self) -> None:
        """Start the background task (connects, subscribes, reconnects)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        attempt = 0
        while not self._stopped:
            client = redis.asyncio.Redis(connection_pool=self._pool_factory())
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self.connected = True
                attempt = 0
                self._on_change()  # anything committed while we were not listening
                await self._serve(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception:  # lost or refused: back off, then reconnect
                pass
            finally:
                self.connected = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await client.aclose(close_connection_pool=True)
            if self._stopped:
                return
            self.reconnects += 1
            self._on_change()
            await asyncio.sleep(min(MAX_BACKOFF, 0.05 * 2**attempt))
            attempt += 1

    async def _serve(self, pubsub: Any) -> None:
        while not self._stopped:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=KEEPALIVE_SECONDS
            )
            if message is None:
                await pubsub.ping()  # notice a dead connection
                continue
            if message.get("type") == "message" and message.get("data") != self._token:
                self._on_change()
