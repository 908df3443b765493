"""The SQLite event store (``sqlite:///path/to/events.db``): one file, WAL, group commit.

The adapter assembles the package: ``read`` (the reader connection), ``commit`` (the group
commit, which writes through ``write``), ``schema`` (migrations) and ``errors``.

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
import os
import sqlite3

from chronik.errors import ConfigurationError, StoreUnavailable
from chronik.messages import AppendResult, RecordedEvent, StreamId
from chronik.store.base import EventStore, WriteUnit
from chronik.store.commit_log import CommitLog
from chronik.store.records import Written
from chronik.store.sqlite import rewrite
from chronik.store.sqlite.archive import SQLiteArchive
from chronik.store.sqlite.commit import WAL_LIMIT, GroupCommit, connect
from chronik.store.sqlite.errors import open_failed
from chronik.store.sqlite.read import SQLiteReader
from chronik.store.sqlite.retention import SQLiteRetention
from chronik.store.sqlite.schema import options_from_url, path_from_url

__all__ = ["WAL_LIMIT", "SQLiteEventStore", "options_from_url"]


class SQLiteEventStore(SQLiteReader, SQLiteArchive, SQLiteRetention, EventStore):
    """An event store in one SQLite file (WAL); several processes may share the file."""

    supports_tables = True
    supports_deletion = True  # soft / hard deletes: chronik.store.deletion
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
        self._writer = GroupCommit(self.path, synchronous, busy_timeout_ms, self._batch_done)
        self.commit_log = CommitLog()  # positions follow commit order: one writer at a time
        self._init_reader()
        self._watchers = 0
        self._poll_task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        missing = not self.create and self.path != ":memory:"
        if missing and not await loop.run_in_executor(None, os.path.isfile, self.path):
            raise StoreUnavailable(f"no store at {self.path}")
        try:
            await self._writer.open()
            self._rconn = connect(
                self.path, self.busy_timeout_ms, self.synchronous, query_only=True
            )
        except (OSError, sqlite3.Error) as exc:
            raise open_failed(self.path, exc) from exc
        self._data_version = self._rconn.execute("PRAGMA data_version").fetchone()[0]

    async def _close(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
        await self._writer.close(self._rconn)  # pending appends finish first

    # --- writing: group commit (chronik.store.sqlite.commit) ----------------------------------

    async def _write(self, unit: WriteUnit) -> list[AppendResult]:
        self._writer.fault_hook = self.fault_hook
        return await self._writer.write(unit)

    def _batch_done(self, failed: BaseException | None, written: Written) -> None:
        """After each batch: health, and when something committed, its appends noted in the
        commit log, then a wake-up for readers (which may consult the log)."""
        if failed is not None:
            self._write_failed(failed)
        elif written:
            self._write_succeeded()
        if written:
            log = self.commit_log
            if log is not None:
                for unit, results in written:
                    if unit.appends:
                        log.add(unit, results)
            self._notify(own_commit=True)

    # --- in-place rewrites (chronik.store.sqlite.rewrite) ------------------------------------

    async def _rewrite_event(
        self, event_id: str, payload: bytes, content_type: str
    ) -> RecordedEvent | None:
        old = await self._get_event(event_id)
        if old is None:
            return None
        args = (self.path, self.busy_timeout_ms, self.synchronous)
        if not await rewrite.rewrite_event(*args, event_id, old.stream, payload, content_type):
            return None
        return await self._get_event(event_id)

    async def _drop_snapshot(self, stream: StreamId) -> bool:
        return await rewrite.drop_snapshot(
            self.path, self.busy_timeout_ms, self.synchronous, stream
        )

    # --- cross-process notification -----------------------------------------------------------

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
                self._changed()

    def _changed(self) -> None:
        """A poll saw the file change: when all of it may be this object's own appends, idle
        waiters are asked; otherwise another process appended after what the commit log
        noted, so the log is forgotten (a round woken by an own commit just before would
        otherwise move on unread past it) and every waiter wakes."""
        own = self._all_noted()
        if not own and self.commit_log is not None:
            self.commit_log.clear()
        self._notify(own_commit=own)

    def _all_noted(self) -> bool:
        """Whether the newest event in the file is the last one the commit log noted: the
        change a poll saw added no other process's event (it was this object's own commit, or
        no append), so idle waiters may be asked whether they want it."""
        last = None if self.commit_log is None else self.commit_log.last
        if last is None:
            return False
        try:
            row = self._rconn.execute("SELECT max(position) FROM chronik_events").fetchone()
        except sqlite3.Error:
            return False
        return bool(row[0] == last)
