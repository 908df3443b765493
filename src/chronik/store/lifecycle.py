"""The lifecycle every store shares: open / close, health, and the change signal readers wait on.

``EventStore`` (``chronik.store.base``) builds on it; adapters implement ``_open`` / ``_close``
and may override ``_watch`` (poll for other processes' commits while someone waits).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

from chronik.errors import StoreClosed
from chronik.messages import Position
from chronik.store.commit_log import CommitLog
from chronik.store.records import HEALTHY, FaultHook, StoreHealth

__all__ = ["ChangeSignal", "StoreLifecycle", "Wanted"]


#: a waiter's question at a commit: does it want to wake for it (it may ask ``committed_types``)?
Wanted = Callable[[], bool]
Waiting = list[tuple[asyncio.Future[bool], Wanted | None]]


class ChangeSignal(asyncio.Event):
    """A store's change signal: an asyncio.Event that also resolves the futures handed to
    ``resolve_on_set`` when it is set (a waiter without a task of its own).

    At a commit of the store object itself (``set_for_own_commit``), a future handed with
    ``wanted`` is resolved only if ``wanted()`` says so (or raises); else it stays registered
    for the next change. The registrations are the store's, shared by its successive signals:
    ``forget`` works on any of them. Any other change (another process's commit, a close,
    ``wake_readers``) resolves them all."""

    def __init__(self, waiting: Waiting | None = None) -> None:
        super().__init__()
        self._futures: Waiting = [] if waiting is None else waiting

    def set(self) -> None:
        self._set(filtered=False)

    def set_for_own_commit(self) -> None:
        """Set for a commit of the store object itself: ask each ``wanted``."""
        self._set(filtered=True)

    def _set(self, filtered: bool) -> None:
        super().set()
        futures = self._futures
        futures[:] = [entry for entry in futures if not _resolve(*entry, filtered)]

    def resolve_on_set(self, fut: asyncio.Future[bool], wanted: Wanted | None = None) -> None:
        """Resolve ``fut`` when this signal is set (now, if it is), and the commit is
        ``wanted`` (None: any commit); its result: whether an own commit resolved it."""
        if self.is_set():
            if not fut.done():
                fut.set_result(False)
        else:
            self._futures.append((fut, wanted))

    def forget(self, fut: asyncio.Future[bool]) -> None:
        """No longer resolve ``fut`` (its waiter stopped waiting)."""
        futures = self._futures
        for i, (registered, _) in enumerate(futures):
            if registered is fut:
                del futures[i]
                return


def _resolve(fut: asyncio.Future[bool], wanted: Wanted | None, filtered: bool) -> bool:
    """Resolve ``fut`` (with ``filtered``: an own commit) unless ``filtered`` and ``wanted``
    says no; True when it is done with (resolved, or resolved before)."""
    if fut.done():
        return True
    if filtered and wanted is not None:
        try:
            if not wanted():
                return False
        except Exception:  # a question that fails wakes its waiter, who finds out itself
            pass
    fut.set_result(filtered)
    return True


class StoreLifecycle(abc.ABC):
    """An async context manager with an explicit state (new, open, closed), the writer's health
    and a change signal set at each commit."""

    url: str

    def __init__(self) -> None:
        self._state = "new"
        self._open_lock: asyncio.Lock | None = None
        self._change: ChangeSignal | None = None
        self._waiting: Waiting = []  # the futures on this store's change signals
        #: this object's own appends lately, where positions follow commit order (SQLite, memory)
        self.commit_log: CommitLog | None = None
        #: Set by ``chronik.testing.faults`` only; adapters call it at each step when set.
        self.fault_hook: FaultHook | None = None
        self._health = HEALTHY

    # --- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> Self:
        """Open the store (create the schema if needed); idempotent."""
        if self._state == "open":
            return self
        if self._state == "closed":
            raise StoreClosed(f"{self!r} is closed")
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._state == "new":
                await self._open()
                self._state = "open"
        return self

    async def close(self) -> None:
        """Close the store; pending subscriptions end."""
        if self._state == "open":
            self._state = "closed"
            self._notify()
            await self._close()
        self._state = "closed"

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} {self._state}>"

    @property
    def closed(self) -> bool:
        """True once the store has been closed."""
        return self._state == "closed"

    @property
    def health(self) -> StoreHealth:
        """Whether the writer works (see StoreHealth); read-only, cheap, never raises.

        Not ok while the latest writes failed with StoreUnavailable (disk full, connection
        lost, lock timeouts ...) until the next successful write, and once the store is
        closed. The memory adapter is always ok while open.
        """
        if self._state == "closed":
            return StoreHealth(False, "the store is closed", None, 0)
        return self._health

    def _write_succeeded(self) -> None:
        """Adapters call this after a commit: health is ok again."""
        if not self._health.ok:
            self._health = HEALTHY

    def _write_failed(self, error: BaseException) -> None:
        """Adapters call this when a write fails for a reason of the store's own."""
        h = self._health
        self._health = StoreHealth(
            False,
            f"writes are failing: {error}",
            time.time() if h.ok else h.since,
            h.failures + 1,
        )

    async def _ready(self) -> None:
        if self._state != "open":
            await self.open()

    # --- change notification (for subscriptions) ----------------------------------------------

    def change_signal(self) -> ChangeSignal:
        """An event that is set at the next commit; take it before reading, then wait on it."""
        if self._change is None:
            self._change = ChangeSignal(self._waiting)
        return self._change

    def wake_readers(self) -> None:
        """Set the current change signal now (a reader that closes wakes its own wait)."""
        self._notify()

    def committed_types(self, after: Position) -> tuple[Position, frozenset[str]] | None:
        """(a position P, the types of the events committed after ``after`` up to P) when this
        store object appended every one of them itself (a reader that follows none of those
        types may move its bound to P without a read); None when it cannot tell."""
        log = self.commit_log
        return None if log is None else log.types_after(after)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Hold while waiting on ``change_signal()``.

        Adapters that must poll to see other processes' commits poll only while someone watches.
        """
        self._watch(1)
        try:
            yield
        finally:
            self._watch(-1)

    def _notify(self, own_commit: bool = False) -> None:
        """Set the change signal: for a commit of this object (``own_commit``: the waiters'
        ``wanted`` is asked, after the commit log noted it) or any other change."""
        change = self._change
        if change is None:
            if not self._waiting:
                return
            change = ChangeSignal(self._waiting)  # for the futures an earlier commit kept
        self._change = None
        if own_commit:
            change.set_for_own_commit()
        else:
            change.set()

    def _watch(self, delta: int) -> None:  # noqa: B027 - optional hook
        """A reader starts (+1) or stops (-1) waiting for changes; adapters may poll."""

    @abc.abstractmethod
    async def _open(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...
