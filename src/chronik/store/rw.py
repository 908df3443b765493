"""ReadWriteStore: write to one store, read from its replicas, with read-your-writes.

``ReadWriteStore(write=primary, read=[standby, ...], max_lag=5.0)`` (or ``rw://?write=URL&
read=URL``: ``chronik.store.composite_urls``) commits every write to ``write`` and sends reads to
a reader. The readers must be physical replicas of the writer (a PostgreSQL hot standby): the
same events at the same positions, so a reader and the writer can serve the same reader in
turn.

Read-your-writes by position: the store remembers the highest position it wrote (``written``);
``observe(position)`` raises that floor for everyone (a ``CommandResult.position`` from another
process) and ``reading_after(position)`` for the reads of one task. A read goes to a reader
whose ``head()`` has reached the floor: it waits for one up to ``max_lag`` seconds, then reads
from the writer and counts a fallback (``fallbacks``, ``health``); for ``max_lag`` seconds after
a fallback reads do not wait again. On PostgreSQL ``head()`` is the safe head, so a reader at
the floor has replayed every transaction that sorts before it: what the writer's ``read_all``
shows, the reader shows.

Which reads go where (``reads="log"``, the default):

* to a reader (waiting for the floor): ``read_all``, ``read_page``, ``subscribe`` (so
  projections catch up from the replica), ``head``, ``settled``, ``list_streams``,
  ``get_event``;
* to the writer, always: what the write path decides on: ``read_stream`` and
  ``stream_version`` (command dispatch loads the aggregate it appends to), ``read_query`` (DCB
  decisions), ``load_snapshot``, ``load_checkpoint``, ``read_table`` (read models that
  projections update in place, leases, the outbox, projection bookkeeping).

``reads="all"`` sends stream and query reads, snapshots and read-model tables to a reader too
(a query server); checkpoints, leases and chronik's own tables stay on the writer. Closing the
store closes its parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Final, NamedTuple, TypeVar

from chronik.adapters import safe_url
from chronik.dcb import Query
from chronik.errors import ConfigurationError, StoreUnavailable, ValidationError
from chronik.messages import (
    AppendResult,
    Checkpoint,
    Position,
    RecordedEvent,
    Snapshot,
    StreamId,
    StreamInfo,
)
from chronik.store.base import EventStore, ReadPage, StoreHealth, WriteUnit
from chronik.store.composite import CompositeStore
from chronik.store.rw_writer import WriterOperations
from chronik.store.system_tables import SYSTEM_TABLES
from chronik.store.tables import Condition

__all__ = ["READS", "ReadWriteStore", "ReaderStatus"]

READS: Final = ("log", "all")
#: A reader that failed is not asked again for this long (seconds).
DOWN_SECONDS: Final = 5.0
_SYSTEM: Final = frozenset(t.name for t in SYSTEM_TABLES)
T = TypeVar("T")
_FLOOR: ContextVar[Position | None] = ContextVar("chronik_rw_floor", default=None)


class ReaderStatus(NamedTuple):
    """One reader of a ReadWriteStore as ``replication()`` sees it.

    ``head`` is the reader's head, ``behind`` whether it is before the writer's head (None:
    unknown), ``replay_lag_seconds`` what a PostgreSQL standby reports (``replay_lag``), and
    ``down`` whether it failed within the last DOWN_SECONDS.
    """

    url: str
    head: Position | None
    behind: bool | None
    replay_lag_seconds: float | None
    down: bool


def _max(a: Position | None, b: Position | None) -> Position | None:
    return b if a is None or (b is not None and b > a) else a


class ReadWriteStore(WriterOperations, CompositeStore):
    """Writes to ``write``, reads from ``read`` (replicas of it), read-your-writes by position."""

    def __init__(
        self,
        write: EventStore,
        read: Sequence[EventStore],
        *,
        max_lag: float = 5.0,
        reads: str = "log",
        url: str | None = None,
    ) -> None:
        readers = list(read)
        if not readers:
            raise ConfigurationError("ReadWriteStore needs at least one reader (read=[...])")
        if type(max_lag) not in (int, float) or not math.isfinite(max_lag) or max_lag < 0:
            raise ConfigurationError(f"max_lag must be a number of seconds >= 0, not {max_lag!r}")
        if reads not in READS:
            raise ConfigurationError(f"reads must be one of {', '.join(READS)}, not {reads!r}")
        super().__init__(url or f"rw://{write.url}", [write, *readers], write)
        # deletes, retention, compaction and rewrites are the writer's: as far as it offers them
        self.supports_deletion = write.supports_deletion  # type: ignore[misc]
        self.writer = write
        self.readers: tuple[EventStore, ...] = tuple(readers)
        self.max_lag = float(max_lag)
        self.reads = reads
        #: The highest position this store wrote (the read-your-writes floor).
        self.written: Position | None = None
        #: Reads that went to the writer because no reader reached the floor in max_lag.
        self.fallbacks = 0
        self.last_fallback: float | None = None  # time.time() of the latest one
        self.last_fallback_reason = ""
        self._seen: dict[int, Position] = {}  # reader -> the highest head it reported
        self._down: dict[int, float] = {}  # reader -> monotonic time until it is asked again
        self._stale_until = 0.0  # after a fallback, reads do not wait until then
        self._turn = 0

    def __repr__(self) -> str:
        readers = ", ".join(safe_url(r.url) for r in self.readers)
        return (
            f"<ReadWriteStore write={safe_url(self.writer.url)} read=[{readers}] "
            f"max_lag={self.max_lag:g} {self._state}>"
        )

    async def _open(self) -> None:
        """Open the writer (its failure fails the open) and the readers; a reader that cannot
        be reached is set aside for DOWN_SECONDS (reads go to the writer meanwhile)."""
        await self.writer.open()
        for i, reader in enumerate(self.readers):
            if reader is self.writer:
                continue
            try:
                await reader.open()
            except StoreUnavailable:
                self._down[i] = time.monotonic() + DOWN_SECONDS

    # --- read-your-writes ---------------------------------------------------------------------

    def observe(self, position: Position) -> None:
        """Raise the floor of every later read to ``position`` (a write seen elsewhere)."""
        self.written = _max(self.written, _check(position))

    @contextlib.contextmanager
    def reading_after(self, position: Position | None) -> Iterator[None]:
        """Reads of this task (and tasks it starts) inside the block see ``position``."""
        token = _FLOOR.set(_max(_FLOOR.get(), None if position is None else _check(position)))
        try:
            yield
        finally:
            _FLOOR.reset(token)

    def floor(self) -> Position | None:
        """The position the next read of this task must see (None: any reader will do)."""
        return _max(self.written, _FLOOR.get())

    # --- health -------------------------------------------------------------------------------

    @property
    def health(self) -> StoreHealth:
        """The writer's health; while ok, the detail tells of recent fallbacks to the writer."""
        health = super().health
        last = self.last_fallback
        if health.ok and last is not None and time.time() - last < 60:
            return StoreHealth(
                True,
                f"ok; {self.fallbacks} reads fell back to the writer, the latest "
                f"{time.time() - last:.0f} s ago ({self.last_fallback_reason})",
            )
        return health

    async def replication(self) -> list[ReaderStatus]:
        """Each reader's head against the writer's, and a standby's replay lag."""
        await self._ready()
        writer_head = await self.writer.head()
        out = []
        for i, reader in enumerate(self.readers):
            try:
                head = await reader.head()
                measure = getattr(reader, "replay_lag", None)  # a PostgreSQL standby
                lag = await measure() if measure is not None else None
            except StoreUnavailable:
                out.append(ReaderStatus(safe_url(reader.url), None, None, None, True))
                continue
            behind = None if writer_head is None else head is None or head < writer_head
            seconds = getattr(lag, "seconds", None)
            down = self._down.get(i, 0.0) > time.monotonic()
            out.append(ReaderStatus(safe_url(reader.url), head, behind, seconds, down))
        return out

    async def horizon_lag(self) -> Any:
        """The writer's HorizonLag (PostgreSQL), None for a writer without a horizon."""
        measure = getattr(self.writer, "horizon_lag", None)
        return None if measure is None else await measure()

    # --- routing ------------------------------------------------------------------------------

    def _watched(self) -> Sequence[EventStore]:
        return self.readers

    def _candidates(self) -> list[tuple[int, EventStore]]:
        now = time.monotonic()
        n = len(self.readers)
        self._turn = (self._turn + 1) % n
        order = [(self._turn + k) % n for k in range(n)]
        return [(i, self.readers[i]) for i in order if self._down.get(i, 0.0) <= now]

    def _fall_back(self, why: str) -> EventStore:
        self.fallbacks += 1
        self.last_fallback = time.time()
        self.last_fallback_reason = why
        self._stale_until = time.monotonic() + self.max_lag
        return self.writer

    async def _reader(self) -> EventStore:
        """A reader that has reached the floor, waiting up to max_lag; else the writer."""
        await self._ready()
        target = self.floor()
        candidates = self._candidates()
        if not candidates:
            return self._fall_back("no reader is up")
        if target is None:
            return candidates[0][1]
        deadline = time.monotonic() + (
            0.0 if time.monotonic() < self._stale_until else self.max_lag
        )
        delay = 0.002
        while True:
            for i, reader in candidates:
                if await self._reached(i, reader, target):
                    return reader
            candidates = [
                (i, r) for i, r in candidates if self._down.get(i, 0.0) <= time.monotonic()
            ]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not candidates:
                return self._fall_back(f"the readers were more than {self.max_lag:g} s behind")
            first = candidates[0][1]
            signal = first.change_signal()
            with first.watching(), contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), min(delay, remaining))
            delay = min(delay * 2, 0.05)

    async def _reached(self, i: int, reader: EventStore, target: Position) -> bool:
        seen = self._seen.get(i)
        if seen is not None and seen >= target:
            return True
        try:
            head = await reader.head()
        except StoreUnavailable:
            self._down[i] = time.monotonic() + DOWN_SECONDS
            return False
        if head is None:
            return False
        self._seen[i] = _max(seen, head) or head
        return head >= target

    async def _decider(self) -> EventStore:
        """Where reads that feed decisions go: the writer (reads="log") or a reader."""
        return self.writer if self.reads == "log" else await self._reader()

    async def _read(self, call: Callable[[EventStore], Awaitable[T]], decides: bool = False) -> T:
        """``call`` on the store the read goes to; a reader that fails is set aside for
        DOWN_SECONDS and the read goes to the writer (a fallback)."""
        store = await (self._decider() if decides else self._reader())
        if store is self.writer:
            return await call(store)
        try:
            return await call(store)
        except StoreUnavailable:
            self._down[self.readers.index(store)] = time.monotonic() + DOWN_SECONDS
            return await call(self._fall_back(f"reader {safe_url(store.url)} failed"))

    # --- writing ------------------------------------------------------------------------------

    async def _write(self, unit: WriteUnit) -> list[AppendResult]:
        results = await self.writer._write(unit)
        for result in results:
            self.written = _max(self.written, result.position)
        return results

    # --- reading: log-wide reads from a reader ------------------------------------------------

    async def read_page(
        self,
        after: Position | None,
        limit: int,
        domains: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        tenant: str | None = None,
    ) -> ReadPage:
        """``EventStore.read_page`` on one reader (its head and page agree); through the
        attached archive when there is one (``chronik.store.archived_reads``)."""
        if self.archive is not None:
            return await super().read_page(after, limit, domains, types, tenant)
        return await self._read(lambda r: r.read_page(after, limit, domains, types, tenant))

    async def _head(self) -> Position | None:
        return await self._read(lambda r: r.head())

    async def _settled(self, after: Position | None) -> bool:
        return await self._read(lambda r: r.settled(after))

    async def _read_all_page(
        self,
        after: Position | None,
        before: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        limit: int,
        backward: bool,
    ) -> list[RecordedEvent]:
        return await self._read(
            lambda r: r._read_all_page(after, before, domains, types, limit, backward)
        )

    async def _list_streams_page(
        self, domain: str | None, prefix: str | None, cursor: int | None, limit: int
    ) -> tuple[list[StreamInfo], int | None]:
        return await self._read(lambda r: r._list_streams_page(domain, prefix, cursor, limit))

    async def _get_event(self, event_id: str) -> RecordedEvent | None:
        return await self._read(lambda r: r._get_event(event_id))

    # --- reading: what decisions read ---------------------------------------------------------

    async def _read_stream_page(
        self, stream: StreamId, from_sequence: int | None, backward: bool, limit: int
    ) -> list[RecordedEvent]:
        return await self._read(
            lambda r: r._read_stream_page(stream, from_sequence, backward, limit), True
        )

    async def _stream_version(self, stream: StreamId) -> int | None:
        return await self._read(lambda r: r._stream_version(stream), True)

    async def _read_query_page(
        self, query: Query, cursor: Position | None, limit: int, backward: bool
    ) -> list[RecordedEvent]:
        return await self._read(lambda r: r._read_query_page(query, cursor, limit, backward), True)

    async def _read_query_payloads(
        self, query: Query, after: Position | None, limit: int, tenant: str | None = None
    ) -> list[Any]:
        return await self._read(lambda r: r._read_query_payloads(query, after, limit, tenant), True)

    async def _load_snapshot(self, stream: StreamId) -> Snapshot | None:
        return await self._read(lambda r: r._load_snapshot(stream), True)

    async def _load_checkpoint(self, name: str, partition: int) -> Checkpoint | None:
        return await self.writer._load_checkpoint(name, partition)

    async def _read_table(
        self,
        table: str,
        where: tuple[Condition, ...],
        order_by: tuple[tuple[str, bool], ...],
        limit: int | None,
        after: tuple[Any, ...] | None,
    ) -> list[dict[str, Any]]:
        if table in _SYSTEM:
            return await self.writer._read_table(table, where, order_by, limit, after)
        return await self._read(lambda r: r._read_table(table, where, order_by, limit, after), True)


def _check(position: Position) -> Position:
    if not isinstance(position, Position):
        raise ValidationError(f"expected a Position, got {position!r}", field="position")
    return position
