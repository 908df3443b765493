"""The task a processor runs in: start, stop within a grace period, join, idle between rounds.

``Loop`` owns one asyncio task and nothing of a projection: a subclass provides ``_acquire``
(what to claim before the task starts) and ``_run`` (the loop, which checks ``_stopping``).
An idle wait may ask, at each commit of the store object itself, whether it is ``wanted``
(``ChangeSignal``); ``quiet_wake`` then tells the round that follows that the commit log
covers what woke it (a round woken by its time or another process's commit reads).
"""

from __future__ import annotations

import asyncio
import time

from chronik.errors import ProjectionStopped
from chronik.store.base import EventStore
from chronik.store.lifecycle import ChangeSignal, Wanted

__all__ = ["Loop"]


class Loop:
    """One background loop over a store, with its lifecycle."""

    def __init__(self, store: EventStore, name: str, task_name: str) -> None:
        self.store = store
        self._name = name  # what errors call it
        self._task_name = task_name
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._woken = False  # woken during a round: the next idle returns at once
        self._woken_quiet = False  # ... by ``_wake(quiet=True)`` only
        #: the last idle wait ended by a commit of the store object itself (or a quiet wake-up)
        self.quiet_wake = False
        self._waiting: asyncio.Future[bool] | None = None  # the idle wait in progress
        self._busy_since: float | None = None
        self._next_poll = 0.0  # the monotonic time the loop's next round is due by

    async def _acquire(self) -> bool:
        """Run before the loop's task starts (claim what it needs); whether that went."""
        return True

    async def _run(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Set up (``_acquire``) and start the loop."""
        if self._task is None or (self._task.done() and not self._stopping):
            await self._acquire()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._task_name)

    async def _halt(self, grace: float | None) -> None:
        """End the loop after its current round; cancel it if that takes over ``grace`` s."""
        self._stopping = True
        self._wake()
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait([task], timeout=grace)
            if not done:
                task.cancel()
                await asyncio.wait([task], timeout=1.0)

    async def join(self) -> None:
        """Wait until the loop ends; raise what ended it unless it was stopped (or the store
        closed), ProjectionStopped if it ended without a cause."""
        task = self._task
        if task is None:
            return
        await asyncio.wait([task])  # never cancels the loop itself
        if self._stopping or self.store.closed:
            return
        if task.cancelled():
            raise ProjectionStopped(f"{self._name}: its loop was cancelled")
        exc = task.exception()
        raise exc if exc is not None else ProjectionStopped(f"{self._name}: loop ended")

    @property
    def busy_for(self) -> float:
        """Seconds the current round has been running, 0 when idle."""
        return 0.0 if self._busy_since is None else time.monotonic() - self._busy_since

    def _wake(self, quiet: bool = False) -> None:
        """End the idle wait now, or the next one at once (``quiet``: as an own commit would:
        for a reader waiting for a position, not for anything the commit log cannot tell)."""
        self._woken_quiet = quiet and (self._woken_quiet or not self._woken)
        self._woken = True
        if self._waiting is not None:
            _resolve(self._waiting, quiet)

    async def _idle(self, signal: ChangeSignal, wanted: Wanted | None = None) -> None:
        """Wait for a change in the store (``signal``; at its own commits, only a ``wanted``
        one), a wake-up or the next round's time; sets ``quiet_wake``."""
        timeout = max(0.0, self._next_poll - time.monotonic())
        if self._stopping or self._woken:
            self.quiet_wake = self._woken_quiet and not self._stopping
            self._woken = self._woken_quiet = False
            return
        loop = asyncio.get_running_loop()
        waiting = self._waiting = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiting, False)
        signal.resolve_on_set(waiting, wanted)
        self.quiet_wake = False
        try:
            with self.store.watching():
                self.quiet_wake = await waiting
        finally:
            timer.cancel()
            signal.forget(waiting)
            self._waiting, self._woken, self._woken_quiet = None, False, False


def _resolve(fut: asyncio.Future[bool], quiet: bool) -> None:
    if not fut.done():
        fut.set_result(quiet)
