"""The SQLite event store (``sqlite:///path/to/events.db``): one file, WAL, group commit.

One connection writes, owned by the event loop at ``synchronous=normal`` (a commit costs about as
much as a hop to a thread, and a process crash loses nothing) or by one writer thread at
``synchronous=full`` (fsync per commit, survives power loss). Appends that arrive while a commit
is pending are committed together in one transaction, each with its own expectation check (a
savepoint each) and its own result. Readers use their own connection, in bounded pages. WAL
checkpoints run on a background thread. Another process writing the same file is seen by
subscribers through ``PRAGMA data_version`` polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from chronik.errors import (
    CheckpointFenced,
    ConfigurationError,
    ReadModelError,
    StoreUnavailable,
    WrongExpectedVersion,
)
from chronik.messages import (
    JSON,
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
    check_expected,
    match_duplicate,
    unit_error,
)
from chronik.store.sqlite.read import SELECT_STREAM, SQLiteReader
from chronik.store.sqlite.schema import migrate, options_from_url, path_from_url
from chronik.store.sqlite.tables import write_tables

__all__ = ["SQLiteEventStore", "options_from_url"]

_INSERT_EVENT = (
    "INSERT INTO chronik_events (stream_id, sequence, event_id, type, schema_version, payload, "
    "metadata, content_type, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
MAX_BATCH_REQUESTS: Final = 512
CHECKPOINT_BYTES: Final = 4 * 1024 * 1024  # a background checkpoint after this much written
WAL_LIMIT: Final = 4 * CHECKPOINT_BYTES  # past this, writes pause while a checkpoint completes


class _Busy(Exception):
    """Another connection holds the write lock."""


def _is_busy(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def _is_storage_error(exc: sqlite3.Error) -> bool:
    """Whether a driver error is the database's own trouble (disk full, I/O, locks ...)
    rather than a refusal of the statement."""
    return getattr(exc, "sqlite_errorcode", None) in _STORAGE_ERRORS


_STORAGE_ERRORS: Final = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)

Outcome = list[AppendResult] | BaseException
Pending = tuple[WriteUnit, "asyncio.Future[list[AppendResult]]"]


class SQLiteEventStore(SQLiteReader, EventStore):
    """An event store in one SQLite file (WAL); several processes may share the file."""

    supports_tables = True
    head_bounds_reads = True

    def __init__(
        self,
        url: str,
        *,
        synchronous: str = "normal",
        busy_timeout_ms: int = 5000,
        poll_interval: float = 0.01,
        create: bool = True,
        **limits: int,
    ) -> None:
        super().__init__(**limits)
        self.url = url
        self.path = path_from_url(url)
        self.create = create  # False: opening a missing file fails (read-only CLI commands)
        if synchronous not in ("normal", "full"):
            raise ConfigurationError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.poll_interval = poll_interval
        self._inline = synchronous == "normal"
        self._queue: list[Pending] = []
        self._flush_scheduled = False
        self._flush_task: asyncio.Task[None] | None = None
        self._busy_since: float | None = None
        self._wconn: sqlite3.Connection | None = None  # None: to be (re)opened
        self._init_reader()
        self._watchers = 0
        self._poll_task: asyncio.Task[None] | None = None
        self._checkpoint_bytes = 0
        self._checkpoint_future: asyncio.Future[int] | None = None
        self._hold = False  # writes paused while a checkpoint catches up
        self._checkpoint_quiet = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        missing = not self.create and self.path != ":memory:"
        if missing and not await loop.run_in_executor(None, os.path.isfile, self.path):
            raise StoreUnavailable(f"no store at {self.path}")
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="chronik-sqlite-writer")
        self._background = ThreadPoolExecutor(1, thread_name_prefix="chronik-sqlite-checkpoint")
        try:
            await loop.run_in_executor(None, _make_parent, self.path)
            self._wconn = await loop.run_in_executor(self._writer_thread, self._connect_writer)
            self._rconn = self._connect(query_only=True)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        self._data_version = self._rconn.execute("PRAGMA data_version").fetchone()[0]
        self._idle = asyncio.Event()  # set while no append is queued or being written
        self._idle.set()

    def _connect(self, query_only: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        if query_only:
            conn.execute("PRAGMA query_only = 1")
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            conn.close()
            raise ConfigurationError(f"{self.path}: cannot switch to WAL (journal mode {mode})")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # our background thread checkpoints
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        conn.execute("PRAGMA cache_size = -16000")
        migrate(conn)
        if self._inline:
            # On the event loop a lock held by another process is waited for with
            # asyncio sleeps, never by blocking the loop.
            conn.execute("PRAGMA busy_timeout = 0")
        return conn

    async def _close(self) -> None:
        await self._idle.wait()  # pending appends finish first
        if self._poll_task is not None:
            self._poll_task.cancel()
        if self._checkpoint_future is not None:
            await asyncio.wait([self._checkpoint_future])
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            await loop.run_in_executor(self._writer_thread, self._wconn.close)
        await loop.run_in_executor(self._writer_thread, self._rconn.close)  # may checkpoint
        self._writer_thread.shutdown(wait=False)
        self._background.shutdown(wait=False)

    # --- writing: group commit ----------------------------------------------------------------

    async def _write(self, unit: WriteUnit) -> list[AppendResult]:
        loop = self._loop
        fut: asyncio.Future[list[AppendResult]] = loop.create_future()
        self._queue.append((unit, fut))
        self._idle.clear()
        if self._inline:
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush_inline)
        elif self._flush_task is None or self._flush_task.done():
            self._flush_task = loop.create_task(self._flush_threaded())
        return await fut

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
        except BaseException as exc:
            if not isinstance(exc, _Busy):
                self._abandon(batch)  # KeyboardInterrupt, SystemExit: no future left pending
                raise
            self._queue[:0] = batch
            now = time.monotonic()
            if self._busy_since is None:
                self._busy_since = now
            if (now - self._busy_since) * 1000 > self.busy_timeout_ms:
                self._busy_since = None
                batch = self._take_batch()
                error = StoreUnavailable(
                    f"{self.path} stayed locked by another writer for over "
                    f"{self.busy_timeout_ms} ms"
                )
                self._deliver(batch, [error] * len(batch))
            else:
                self._flush_scheduled = True
                self._loop.call_later(0.002, self._flush_inline)
            return
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
            except _Busy:
                error = StoreUnavailable(f"{self.path} is locked by another writer")
                outcomes = [error] * len(batch)
            except BaseException:  # cancelled flush, KeyboardInterrupt: no future left pending
                self._abandon(batch, unknown=True)
                raise
            self._deliver(batch, outcomes)

    def _abandon(self, batch: list[Pending], unknown: bool = False) -> None:
        """Fail the futures of ``batch`` still pending when its flush ended by an exception;
        keep ``idle`` true to the queue."""
        for _unit, fut in batch:
            if not fut.done():
                error = StoreUnavailable(
                    f"the write to {self.path} was cut short", outcome_unknown=unknown
                )
                fut.set_exception(error)
        if not self._queue:
            self._idle.set()

    def _deliver(self, batch: list[Pending], outcomes: Sequence[Outcome]) -> None:
        wrote = False
        failed: BaseException | None = None
        for (_unit, fut), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, StoreUnavailable):
                    failed = outcome
                if not fut.done():
                    fut.set_exception(outcome)
            else:
                wrote = True
                if not fut.done():
                    fut.set_result(outcome)
        if failed is not None:
            self._write_failed(failed)
        elif wrote:
            self._write_succeeded()
        if wrote:
            self._notify()
            self._maybe_checkpoint(batch)
        if not self._queue:
            self._idle.set()

    def _write_batch(self, batch: list[Pending]) -> list[Outcome]:
        """Write a batch in one transaction (runs on the loop or the writer thread).

        Each unit runs in a savepoint: whatever it raises (a refusal, a driver error, any
        exception at all) fails that unit alone. A failure outside the units (BEGIN, COMMIT,
        a savepoint statement) fails the batch; the connection is then rolled back, or reopened
        if its state is unknown. Raises only _Busy (nothing was done) and KeyboardInterrupt /
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
                if _is_busy(exc):
                    raise _Busy from exc
                raise
            outcomes = self._write_units(conn, batch)
            if all(isinstance(o, BaseException) for o in outcomes):
                conn.execute("ROLLBACK")
                return outcomes
            if hook is not None:
                hook("commit", None)
            committing = True
            conn.execute("COMMIT")
            return outcomes
        except _Busy:
            raise
        except BaseException as exc:
            unknown = self._reset_writer() and committing
            what = "commit to" if committing else "write to"
            error = StoreUnavailable(
                f"{what} {self.path} failed: {type(exc).__name__}: {exc}", outcome_unknown=unknown
            )
            error.__cause__ = exc
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            return [error] * len(batch)

    def _write_units(self, conn: sqlite3.Connection, batch: list[Pending]) -> list[Outcome]:
        now = time.time_ns() // 1000
        outcomes: list[Outcome] = []
        savepoints = len(batch) > 1
        for unit, fut in batch:
            if fut.cancelled():  # its caller gave up before it was written: skip it
                outcomes.append(asyncio.CancelledError())
                continue
            if savepoints:
                conn.execute("SAVEPOINT unit")
            try:
                outcomes.append(self._write_unit(conn, unit, now))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                if not savepoints:
                    return [self._unit_error(exc)]  # the caller rolls back
                conn.execute("ROLLBACK TO unit")
                outcomes.append(self._unit_error(exc))
            if savepoints:
                conn.execute("RELEASE unit")
        return outcomes

    def _unit_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.Error):
            error = StoreUnavailable(f"write to {self.path} failed: {exc}")
            error.__cause__ = exc
            return error
        return unit_error(exc, f"write to {self.path}")

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

    def _write_unit(
        self, conn: sqlite3.Connection, unit: WriteUnit, now: int
    ) -> list[AppendResult]:
        hook = self.fault_hook
        if hook is not None and unit.checkpoints:
            hook("checkpoint", unit)
        for cp in unit.checkpoints:
            row = conn.execute(
                "SELECT epoch FROM chronik_checkpoints WHERE name = ? AND partition = ?",
                (cp.name, cp.partition),
            ).fetchone()
            if row is not None and row[0] > cp.epoch:
                raise CheckpointFenced(cp.name, cp.partition, cp.epoch, row[0])
            conn.execute(
                "INSERT OR REPLACE INTO chronik_checkpoints (name, partition, commit_pos, "
                "index_pos, epoch, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (cp.name, cp.partition, cp.position.commit, cp.position.index, cp.epoch, now),
            )
        if unit.tables:
            if hook is not None:
                hook("tables", unit)
            try:
                write_tables(conn, unit.tables)
            except sqlite3.Error as exc:
                if _is_storage_error(exc):
                    raise
                raise ReadModelError(f"read-model write refused: {exc}") from exc
            except (OverflowError, ValueError) as exc:  # a value the driver cannot bind
                raise ReadModelError(f"read-model write refused: {exc}") from exc
        if hook is not None and unit.snapshots:
            hook("snapshot", unit)
        for snap in unit.snapshots:
            st = snap.stream
            conn.execute(
                "INSERT INTO chronik_snapshots (tenant, domain, aggregate_id, sequence, type, "
                "schema_version, state, taken_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, domain, aggregate_id) DO UPDATE SET "
                "sequence = excluded.sequence, type = excluded.type, "
                "schema_version = excluded.schema_version, state = excluded.state, "
                "taken_at = excluded.taken_at WHERE excluded.sequence >= sequence",
                (
                    st.tenant,
                    st.domain,
                    st.aggregate_id,
                    snap.sequence,
                    snap.type,
                    snap.schema_version,
                    snap.state,
                    snap.taken_at_us,
                ),
            )
        results = []
        for req in unit.appends:
            if hook is not None:
                hook("append", unit)
            stream = req.stream
            key = (stream.tenant, stream.domain, stream.aggregate_id)
            row = conn.execute(SELECT_STREAM, key).fetchone()
            actual: int | None = None if row is None else row[1]
            if not check_expected(req.expected, actual):
                dup = self._find_duplicate(conn, req)
                if dup is None:
                    raise WrongExpectedVersion(stream, req.expected, actual)
                results.append(dup)
                continue
            if row is None:
                stream_id = conn.execute(
                    "INSERT INTO chronik_streams (tenant, domain, aggregate_id, version) "
                    "VALUES (?, ?, ?, -1)",
                    key,
                ).lastrowid
                assert stream_id is not None
            else:
                stream_id = row[0]
            first = 0 if actual is None else actual + 1
            events = req.events
            try:
                if len(events) == 1:
                    e = events[0]
                    last_pos = conn.execute(
                        _INSERT_EVENT,
                        (
                            stream_id,
                            first,
                            e.event_id,
                            e.type,
                            e.schema_version,
                            e.payload,
                            e.metadata,
                            None if e.content_type == JSON else e.content_type,
                            now,
                        ),
                    ).lastrowid
                else:
                    conn.executemany(
                        _INSERT_EVENT,
                        [
                            (
                                stream_id,
                                first + i,
                                e.event_id,
                                e.type,
                                e.schema_version,
                                e.payload,
                                e.metadata,
                                None if e.content_type == JSON else e.content_type,
                                now,
                            )
                            for i, e in enumerate(events)
                        ],
                    )
                    last_pos = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            except sqlite3.IntegrityError as exc:
                if "event_id" not in str(exc):
                    raise
                # An event id is already stored: undo this request's rows, then either it is
                # a retry of a stored append (return its result) or a real duplicate.
                conn.execute(
                    "DELETE FROM chronik_events WHERE stream_id = ? AND sequence >= ?",
                    (stream_id, first),
                )
                if row is None:
                    conn.execute("DELETE FROM chronik_streams WHERE id = ?", (stream_id,))
                dup = self._find_duplicate(conn, req)
                if dup is None:  # pragma: no cover - the index said it exists
                    raise
                results.append(dup)
                continue
            last = first + len(events) - 1
            conn.execute("UPDATE chronik_streams SET version = ? WHERE id = ?", (last, stream_id))
            assert last_pos is not None
            # One transaction, one writer: the rows of one request take consecutive rowids.
            positions = tuple(Position(p) for p in range(last_pos - len(events) + 1, last_pos + 1))
            results.append(AppendResult(stream, first, last, Position(last_pos), positions, now))
        return results

    def _find_duplicate(self, conn: sqlite3.Connection, req: AppendRequest) -> AppendResult | None:
        ids = [e.event_id for e in req.events]
        marks = ",".join("?" * len(ids))
        rows = conn.execute(
            "SELECT e.event_id, e.type, e.schema_version, e.payload, e.metadata, e.content_type, "
            "s.tenant, s.domain, s.aggregate_id, e.sequence, e.position, e.recorded_at "
            "FROM chronik_events e "
            f"JOIN chronik_streams s ON s.id = e.stream_id WHERE e.event_id IN ({marks})",
            ids,
        ).fetchall()
        if not rows:
            return None
        by_id = {r[0]: r for r in rows}
        stored = []
        for event_id in ids:
            r = by_id.get(event_id)
            if r is not None:
                old = PreparedEvent(r[0], r[1], r[2], r[3], r[4], r[5] or JSON)
                stream = StreamId(r[7], r[8], r[6])
                stored.append(StoredEvent(old, stream, r[9], Position(r[10]), r[11]))
        return match_duplicate(req, stored)

    # --- checkpoints and cross-process notification --------------------------------------------

    def _maybe_checkpoint(self, batch: list[Pending]) -> None:
        for unit, _ in batch:
            for req in unit.appends:
                for e in req.events:
                    self._checkpoint_bytes += len(e.payload) + 200
            self._checkpoint_bytes += 100 * len(unit.tables)
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
        if wal_size > WAL_LIMIT and not self._checkpoint_quiet and not self.closed:
            self._hold = True
            self._start_checkpoint()
            return
        if self._hold:
            self._hold = False
            if self._inline:
                if self._queue and not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._loop.call_soon(self._flush_inline)
            elif self._queue and (self._flush_task is None or self._flush_task.done()):
                self._flush_task = self._loop.create_task(self._flush_threaded())

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

    def _watch(self, delta: int) -> None:
        self._watchers += delta
        if self._watchers > 0 and (self._poll_task is None or self._poll_task.done()):
            self._poll_task = self._loop.create_task(self._poll())

    async def _poll(self) -> None:
        while self._watchers > 0 and not self.closed:
            await asyncio.sleep(self.poll_interval)
            try:
                version = self._rconn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                continue
            if version != self._data_version:
                self._data_version = version
                self._notify()


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def _make_parent(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
