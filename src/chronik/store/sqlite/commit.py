"""The SQLite store's group commit: the one writer connection, its queue and WAL checkpoints.

Units that arrive while a commit is pending are committed together in one transaction (each in
a savepoint, with its own result: ``write``). The writer runs on the event loop at
``synchronous=normal`` (a commit costs about as much as a hop to a thread; a lock held by
another process is waited for with loop timers, never by blocking) or on one writer thread at
``synchronous=full``. On the loop, a unit is written straight away, on its caller's task, when
the writer is idle and nothing else on the loop is ready to run (so no other unit could join
its batch): no future, no loop iteration; at most STRAIGHT_LIMIT in a row, then one goes
through the queue so the loop polls its sockets and timers. WAL checkpoints run on a background
thread; past WAL_LIMIT writes pause until one completes. The owner learns of each batch through
``on_batch``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from chronik.errors import ConfigurationError, StoreUnavailable
from chronik.messages import AppendResult
from chronik.store.records import FaultHook, WriteUnit, Written
from chronik.store.sqlite.errors import Busy, batch_failed, is_busy, locked
from chronik.store.sqlite.schema import migrate
from chronik.store.sqlite.write import Outcome, Pending, StreamIds, write_units

__all__ = [
    "CHECKPOINT_BYTES",
    "MAX_BATCH_REQUESTS",
    "STRAIGHT_LIMIT",
    "WAL_LIMIT",
    "GroupCommit",
    "connect",
]

MAX_BATCH_REQUESTS: Final = 512
STRAIGHT_LIMIT: Final = 16  # units written straight through in a row before one is queued
CHECKPOINT_BYTES: Final = 4 * 1024 * 1024  # a background checkpoint after this much written
WAL_LIMIT: Final = 4 * CHECKPOINT_BYTES  # past this, writes pause while a checkpoint completes
_UNKNOWN: Final = (None,)  # stands for the ready callbacks of a loop that does not show them


def connect(
    path: str, busy_timeout_ms: int, synchronous: str, query_only: bool = False
) -> sqlite3.Connection:
    """A connection to ``path`` in autocommit mode with the store's pragmas."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=256
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    if query_only:
        conn.execute("PRAGMA query_only = 1")
    return conn


class GroupCommit:
    """Owns the writer connection; ``write`` queues a unit and returns its results.

    ``on_batch(failed, written)`` runs after each batch: ``failed`` is a StoreUnavailable one
    of its units failed with (the store's own trouble), ``written`` the units that committed.
    """

    def __init__(
        self,
        path: str,
        synchronous: str,
        busy_timeout_ms: int,
        on_batch: Callable[[BaseException | None, Written], None],
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.inline = synchronous == "normal"
        self.fault_hook: FaultHook | None = None  # kept equal to the store's by the store
        self._on_batch = on_batch
        self._queue: list[Pending] = []
        self._flush_scheduled = False
        self._flush_task: asyncio.Task[None] | None = None
        self._straight = 0  # units written straight through since the last queued one
        # the loop's ready callbacks (asyncio's own loop); a loop without them never writes
        # straight through
        self._ready: Sized = _UNKNOWN
        self._busy_since: float | None = None
        self._wconn: sqlite3.Connection | None = None  # None: to be (re)opened
        self._stream_ids: StreamIds = {}  # the writer's, for the short append (write.py)
        self._checkpoint_bytes = 0
        self._checkpoint_future: asyncio.Future[int] | None = None
        self._hold = False  # writes paused while a checkpoint catches up
        self._checkpoint_quiet = False
        self._closing = False

    def __repr__(self) -> str:
        state = "closing" if self._closing else f"{len(self._queue)} queued"
        return f"<GroupCommit {self.path} synchronous={self.synchronous} {state}>"

    async def open(self) -> None:
        """Start the threads and open the writer (migrating the file); raises the driver's
        error (or OSError) when the file cannot be opened."""
        loop = self._loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)
        self._ready = ready if isinstance(ready, collections.deque) else _UNKNOWN
        self._idle = asyncio.Event()  # set while no unit is queued or being written
        self._idle.set()
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="chronik-sqlite-writer")
        self._background = ThreadPoolExecutor(1, thread_name_prefix="chronik-sqlite-checkpoint")
        await loop.run_in_executor(None, _make_parent, self.path)
        self._wconn = await loop.run_in_executor(self._writer_thread, self._connect_writer)

    def _connect_writer(self) -> sqlite3.Connection:
        conn = connect(self.path, self.busy_timeout_ms, self.synchronous)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            conn.close()
            raise ConfigurationError(f"{self.path}: cannot switch to WAL (journal mode {mode})")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # our background thread checkpoints
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        conn.execute("PRAGMA cache_size = -16000")
        migrate(conn)
        if self.inline:
            # On the event loop a lock held by another process is waited for with
            # asyncio sleeps, never by blocking the loop.
            conn.execute("PRAGMA busy_timeout = 0")
        return conn

    async def close(self, reader: sqlite3.Connection) -> None:
        """Finish the queued units and the running checkpoint, then close the writer and
        ``reader`` (on the writer thread: closing the last connection may checkpoint)."""
        self._closing = True
        await self._idle.wait()
        if self._checkpoint_future is not None:
            await asyncio.wait([self._checkpoint_future])
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            await loop.run_in_executor(self._writer_thread, self._wconn.close)
        await loop.run_in_executor(self._writer_thread, reader.close)
        self._writer_thread.shutdown(wait=False)
        self._background.shutdown(wait=False)

    # --- the queue ----------------------------------------------------------------------------

    async def write(self, unit: WriteUnit) -> list[AppendResult]:
        """Queue ``unit`` for the next batch; its results, or the error it failed with.

        On the loop, with the writer idle and nothing else ready to run, the unit is written
        at once instead (a batch of one, as the queue would have made it).
        """
        if (
            self.inline
            and not self._queue
            and not self._ready
            and self._straight < STRAIGHT_LIMIT
            and not self._hold
            and not self._closing
        ):
            self._straight += 1
            batch: list[Pending] = [(unit, None)]
            try:
                outcomes = self._write_batch(batch)
            except Busy:  # another process holds the lock: wait for it in the queue
                pass
            else:
                outcome = outcomes[0]
                if isinstance(outcome, BaseException):
                    self._deliver(batch, outcomes)  # a batch of one, without a future
                    raise outcome
                # committed: what _deliver does for it (the queue stayed empty and idle set,
                # as nothing else ran meanwhile)
                self._on_batch(None, [(unit, outcome)])
                self._count_written(unit)
                return outcome
        self._straight = 0
        loop = self._loop
        fut: asyncio.Future[list[AppendResult]] = loop.create_future()
        self._queue.append((unit, fut))
        self._idle.clear()
        self._kick()
        return await fut

    def _kick(self) -> None:
        if self.inline:
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_inline)
        elif self._flush_task is None or self._flush_task.done():
            self._flush_task = self._loop.create_task(self._flush_threaded())

    def _take_batch(self) -> list[Pending]:
        batch = self._queue[:MAX_BATCH_REQUESTS]
        del self._queue[:MAX_BATCH_REQUESTS]
        return batch

    def _flush_inline(self) -> None:
        self._flush_scheduled = False
        if self._hold or not self._queue:
            return
        batch = self._take_batch()
        try:
            outcomes = self._write_batch(batch)
        except Busy:
            self._queue[:0] = batch
            now = time.monotonic()
            if self._busy_since is None:
                self._busy_since = now
            if (now - self._busy_since) * 1000 > self.busy_timeout_ms:
                self._busy_since = None
                batch = self._take_batch()
                self._deliver(batch, [locked(self.path, self.busy_timeout_ms)] * len(batch))
            else:
                self._flush_scheduled = True
                self._loop.call_later(0.002, self._flush_inline)
            return
        except BaseException:
            self._abandon(batch)  # KeyboardInterrupt, SystemExit: no future left pending
            raise
        self._busy_since = None
        self._deliver(batch, outcomes)
        if self._queue and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_inline)

    async def _flush_threaded(self) -> None:
        loop = self._loop
        while self._queue and not self._hold:
            batch = self._take_batch()
            try:
                outcomes = await loop.run_in_executor(self._writer_thread, self._write_batch, batch)
            except Busy:
                outcomes = [locked(self.path)] * len(batch)
            except BaseException:  # cancelled flush, KeyboardInterrupt: no future left pending
                self._abandon(batch, unknown=True)
                raise
            self._deliver(batch, outcomes)

    def _abandon(self, batch: list[Pending], unknown: bool = False) -> None:
        """Fail the futures of ``batch`` still pending when its flush ended by an exception;
        keep ``idle`` true to the queue."""
        for _unit, fut in batch:
            if fut is not None and not fut.done():
                error = StoreUnavailable(
                    f"the write to {self.path} was cut short", outcome_unknown=unknown
                )
                fut.set_exception(error)
        if not self._queue:
            self._idle.set()

    def _deliver(self, batch: list[Pending], outcomes: Sequence[Outcome]) -> None:
        written: Written = []
        failed: BaseException | None = None
        for (unit, fut), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, StoreUnavailable):
                    failed = outcome
                if fut is not None and not fut.done():
                    fut.set_exception(outcome)
            else:
                written.append((unit, outcome))
                if fut is not None and not fut.done():
                    fut.set_result(outcome)
        self._on_batch(failed, written)
        if written:
            self._maybe_checkpoint(batch)
        if not self._queue:
            self._idle.set()

    # --- one batch, one transaction -----------------------------------------------------------

    def _write_batch(self, batch: list[Pending]) -> list[Outcome]:
        """Write a batch in one transaction (runs on the loop or the writer thread).

        Each unit runs in a savepoint: whatever it raises (a refusal, a driver error, any
        exception at all) fails that unit alone. A failure outside the units (BEGIN, COMMIT,
        a savepoint statement) fails the batch; the connection is then rolled back, or reopened
        if its state is unknown. Raises only Busy (nothing was done) and KeyboardInterrupt /
        SystemExit (after the cleanup).
        """
        committing = False
        try:
            if self._wconn is None:
                self._wconn = self._connect_writer()
            conn = self._wconn
            hook = self.fault_hook
            if hook is not None:
                hook("begin", None)
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                if is_busy(exc):
                    raise Busy from exc
                raise
            outcomes = write_units(conn, batch, self.path, hook, self._stream_ids)
            for o in outcomes:
                if not isinstance(o, BaseException):
                    break
            else:  # every unit failed: nothing to commit
                conn.execute("ROLLBACK")
                return outcomes
            if hook is not None:
                hook("commit", None)
            committing = True
            conn.execute("COMMIT")
            return outcomes
        except Busy:
            raise
        except BaseException as exc:
            unknown = self._reset_writer() and committing
            error = batch_failed(self.path, exc, committing, unknown)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            return [error] * len(batch)

    def _reset_writer(self) -> bool:
        """After a failed batch: roll back; reopen the writer if its state is unknown.

        Returns whether the outcome is unknown (no transaction was open any more to roll back).
        """
        conn = self._wconn
        if conn is None:
            return False
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
                if not conn.in_transaction:
                    return False
            else:
                return True
        except Exception:
            pass
        self._wconn = None
        with contextlib.suppress(Exception):
            conn.close()
        with contextlib.suppress(Exception):  # else the next batch tries again
            self._wconn = self._connect_writer()
        return True

    # --- WAL checkpoints ----------------------------------------------------------------------

    def _maybe_checkpoint(self, batch: list[Pending]) -> None:
        for unit, _ in batch:
            self._count_written(unit)

    def _count_written(self, unit: WriteUnit) -> None:
        """Count what a committed unit added to the WAL; start a checkpoint when due."""
        added = 100 * len(unit.tables)
        for req in unit.appends:
            for e in req.events:
                added += len(e.payload) + 200
        self._checkpoint_bytes += added
        if self._checkpoint_future is None:
            if self._checkpoint_bytes >= CHECKPOINT_BYTES:
                self._start_checkpoint()
        elif self._checkpoint_bytes >= WAL_LIMIT - CHECKPOINT_BYTES:
            # The running checkpoint is slow (a busy machine): pause writes until it is done,
            # so the WAL stays near WAL_LIMIT.
            self._hold = True

    def _start_checkpoint(self) -> None:
        self._checkpoint_bytes = 0
        self._checkpoint_quiet = self._hold  # started with writes paused: it can finish
        fut = self._loop.run_in_executor(self._background, self._checkpoint)
        self._checkpoint_future = fut
        fut.add_done_callback(self._checkpoint_done)

    def _checkpoint_done(self, fut: asyncio.Future[int]) -> None:
        """Writes go on during a checkpoint (up to a WAL_LIMIT's worth). If the WAL outgrew
        WAL_LIMIT, writes pause for one more checkpoint, which then copies every frame, so the
        next write restarts the WAL at its size limit."""
        self._checkpoint_future = None
        wal_size = 0 if fut.cancelled() or fut.exception() else fut.result()
        if wal_size > WAL_LIMIT and not self._checkpoint_quiet and not self._closing:
            self._hold = True
            self._start_checkpoint()
            return
        if self._hold:
            self._hold = False
            if self._queue:
                self._kick()

    def _checkpoint(self) -> int:
        """Copy the WAL into the database (PASSIVE); returns the WAL file's size afterwards."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()
        try:
            return os.path.getsize(f"{self.path}-wal")
        except OSError:
            return 0


def _make_parent(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
