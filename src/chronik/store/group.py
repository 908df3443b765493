"""GroupStore: a read-only view merging several stores' logs, one bounded context each.

``GroupStore({"orders": orders_store, "billing": billing_store}, home=projection_db)`` (or
``group://?orders=URL&billing=URL&home=URL``: ``chronik.store.composite_urls``) reads the
members' logs as one: ``read_all``, ``read_page`` and ``subscribe`` interleave them by record
time, each member in its own order. Positions are cuts across the members
(``chronik.store.group_positions``): reading after the position of the last event seen
resumes exactly, with no gap and no duplicate, in the process that read it. A projection
over a group keeps its checkpoints, read-model tables and leases in ``home``: each checkpoint
is stored with one checkpoint per member (``NAME@member``) in the same unit of work, so it
resumes exactly after a restart too.

Events cannot be written through a group: appends, tagged appends and snapshots raise
StoreReadOnly, and so does every write when there is no ``home``. Stream reads
(``read_stream``, ``stream_version``, ``get_event``, ``load_snapshot``) go to the member that
has the stream; an event found that way is positioned at a cut holding only itself.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import msgspec

from chronik.adapters import safe_url
from chronik.errors import ConfigurationError, NotSupported, StoreReadOnly
from chronik.messages import (
    AppendResult,
    Checkpoint,
    Position,
    RecordedEvent,
    Snapshot,
    StreamId,
    StreamInfo,
)
from chronik.store.base import EventStore, ReadPage, WriteUnit
from chronik.store.composite import CompositeStore
from chronik.store.group_positions import START, Cut, CutBook, after_bounds, before_bounds
from chronik.store.records import PreparedEvent
from chronik.store.retention import Retention, StreamRetention
from chronik.store.tables import Condition

__all__ = ["MEMBER_NAME", "GroupStore"]

MEMBER_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
_CURSOR_BITS: Final = 48  # list_streams cursors: member << 48 | the member's cursor


class GroupStore(CompositeStore):
    """The members' logs read as one (read-only); ``home`` keeps projections' state."""

    def __init__(
        self,
        members: Mapping[str, EventStore],
        *,
        home: EventStore | None = None,
        url: str | None = None,
    ) -> None:
        if not isinstance(members, Mapping) or not members:
            raise ConfigurationError("GroupStore needs members: {name: store, ...}")
        for name in members:
            if not isinstance(name, str) or not MEMBER_NAME.fullmatch(name) or name == "home":
                raise ConfigurationError(
                    f"invalid group member name {name!r}: expected [a-z][a-z0-9_]{{0,31}}, "
                    "not 'home'"
                )
        self.names: tuple[str, ...] = tuple(sorted(members))
        self.members: tuple[EventStore, ...] = tuple(members[n] for n in self.names)
        self.home = home
        parts = [*self.members, *([home] if home is not None else [])]
        super().__init__(url or "group://?" + "&".join(self.names), parts, home)
        self._book = CutBook(len(self.members))

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{n}={safe_url(m.url)}" for n, m in zip(self.names, self.members, strict=True)
        )
        home = "" if self.home is None else f" home={safe_url(self.home.url)}"
        return f"<GroupStore {shown}{home} {self._state}>"

    def _watched(self) -> Sequence[EventStore]:
        return self.members

    # --- writing: checkpoints, tables and leases to home; events nowhere -----------------------

    def _read_only(self, what: str) -> StoreReadOnly:
        return StoreReadOnly(f"the group view of {', '.join(self.names)}", what)

    def _require_tables(self) -> None:
        if self.home is None:
            raise self._read_only("a group view without home= has no tables")
        self.home._require_tables()

    # --- streams over time: each member's own store deletes, keeps and compacts its streams ----

    def _not_supported(self, operation: str) -> NotSupported:
        return NotSupported(f"{operation} (a group view: use the member's own store)", "GroupStore")

    def _require_deletion(self) -> None:
        """Each operation refuses on its own, naming itself (a delete: in ``_write``)."""

    async def _set_retention(self, stream: StreamId, retention: Retention) -> None:
        raise self._not_supported("stream retention")

    async def _get_retention(self, stream: StreamId) -> Retention:
        raise self._not_supported("stream retention")

    async def _retention_page(
        self, cursor: int | None, limit: int
    ) -> tuple[list[StreamRetention], int | None]:
        raise self._not_supported("stream retention")

    async def _first_sequence_since(self, stream: StreamId, recorded_at_us: int) -> int | None:
        raise self._not_supported("stream retention")

    async def _scavenge_stream(
        self, stream: StreamId, before: int, limit: int, dry_run: bool
    ) -> tuple[int, int]:
        raise self._not_supported("scavenging")

    async def _compact_stream(
        self, stream: StreamId, upto: int, event: PreparedEvent
    ) -> RecordedEvent:
        raise self._not_supported("stream compaction")

    async def _rewrite_event(
        self, event_id: str, payload: bytes, content_type: str
    ) -> RecordedEvent | None:
        raise self._not_supported("rewriting an event in place (redaction)")

    async def _drop_snapshot(self, stream: StreamId) -> bool:
        raise self._not_supported("dropping a snapshot")

    async def _write(self, unit: WriteUnit) -> list[AppendResult]:
        if unit.deletes:
            raise self._not_supported("stream deletion")
        if unit.appends or unit.snapshots or unit.conditions or unit.expects:
            raise self._read_only("a group view: append to the member's own store")
        if self.home is None:
            raise self._read_only("a group view without home= keeps no checkpoints")
        checkpoints: list[Checkpoint] = []
        for cp in unit.checkpoints:
            cut = self._book.cut(cp.position, "position")
            checkpoints.append(cp)
            for name, entry in zip(self.names, cut.entries, strict=True):
                mark = START if entry is None else entry
                checkpoints.append(Checkpoint(f"{cp.name}@{name}", cp.partition, mark, cp.epoch))
        return await self.home._write(unit._replace(checkpoints=checkpoints))

    async def _load_checkpoint(self, name: str, partition: int) -> Checkpoint | None:
        if self.home is None:
            return None
        found = await self.home.load_checkpoint(name, partition)
        if found is None:
            return None
        entries: list[Position | None] = []
        for member in self.names:
            mark = await self.home.load_checkpoint(f"{name}@{member}", partition)
            entries.append(None if mark is None or mark.position == START else mark.position)
        position = self._book.restore(tuple(entries))
        return msgspec.structs.replace(found, position=position)

    async def _read_table(
        self,
        table: str,
        where: tuple[Condition, ...],
        order_by: tuple[tuple[str, bool], ...],
        limit: int | None,
        after: tuple[Any, ...] | None,
    ) -> list[dict[str, Any]]:
        assert self.home is not None  # _require_tables said so
        return await self.home._read_table(table, where, order_by, limit, after)

    # --- the merged log -----------------------------------------------------------------------

    async def read_page(
        self,
        after: Position | None,
        limit: int,
        domains: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        tenant: str | None = None,
    ) -> ReadPage:
        """Up to ``limit`` events after the cut ``after``, interleaved by record time; a short
        page says up to which cut nothing else of the filter exists (``scanned``)."""
        cut = self._book.cut(after, "after")
        await self._ready()
        pages = [
            await m.read_page(entry, limit, domains, types, tenant)
            for m, entry in zip(self.members, cut.entries, strict=True)
        ]
        events, cut = self._merge_forward([list(p.events) for p in pages], cut, limit)
        if len(events) < limit:  # every member's page is used up: skip to what they scanned
            scanned = cut
            for k, page in enumerate(pages):
                entry = scanned.entries[k]
                if page.scanned is not None and (entry is None or page.scanned > entry):
                    scanned = scanned.moved(k, page.scanned, -1)
            if scanned != cut:
                return ReadPage(events, self._book.remember(scanned, keep=True))
        return ReadPage(events, None)

    async def _read_all_page(
        self,
        after: Position | None,
        before: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        limit: int,
        backward: bool,
    ) -> list[RecordedEvent]:
        lower = self._book.cut(after, "after")
        lows = after_bounds(lower)
        highs: list[Position | bool | None] = (
            [None] * len(self.members)
            if before is None
            else before_bounds(self._book.cut(before, "before"))
        )
        pages: list[list[RecordedEvent]] = []
        for member, low, high in zip(self.members, lows, highs, strict=True):
            if high is False:
                pages.append([])
                continue
            upper = high if isinstance(high, Position) else None
            pages.append(await member._read_all_page(low, upper, domains, types, limit, backward))
        if not backward:
            return self._merge_forward(pages, lower, limit)[0]
        return self._merge_backward(pages, limit)

    def _merge_forward(
        self, pages: list[list[RecordedEvent]], cut: Cut, limit: int
    ) -> tuple[list[RecordedEvent], Cut]:
        """Merge members' forward pages, oldest record first; each event at its cut."""
        queues = [deque(p) for p in pages]
        out: list[RecordedEvent] = []
        while len(out) < limit:
            heads = [(q[0].recorded_at_us, k) for k, q in enumerate(queues) if q]
            if not heads:
                break
            k = min(heads)[1]
            event = queues[k].popleft()
            cut = cut.moved(k, event.position, k)
            out.append(msgspec.structs.replace(event, position=self._book.remember(cut)))
        return out, cut

    def _merge_backward(self, pages: list[list[RecordedEvent]], limit: int) -> list[RecordedEvent]:
        """Merge members' backward pages, newest record first; each event at its cut."""
        queues = [deque(p) for p in pages]
        out: list[RecordedEvent] = []
        while len(out) < limit:
            heads = [(q[0].recorded_at_us, k) for k, q in enumerate(queues) if q]
            if not heads:
                break
            k = max(heads)[1]
            event = queues[k].popleft()
            entries = tuple(
                event.position if j == k else (q[0].position if q else None)
                for j, q in enumerate(queues)
            )
            position = self._book.remember(Cut(entries, k))
            out.append(msgspec.structs.replace(event, position=position))
        return out

    async def _head(self) -> Position | None:
        heads = tuple([await m.head() for m in self.members])
        if all(h is None for h in heads):
            return None
        return self._book.remember(Cut(heads), keep=True)

    async def _settled(self, after: Position | None) -> bool:
        cut = self._book.cut(after, "after")
        for member, entry in zip(self.members, cut.entries, strict=True):
            if not await member.settled(entry):
                return False
        return True

    # --- one member's streams -----------------------------------------------------------------

    def _alone(self, k: int, event: RecordedEvent) -> RecordedEvent:
        cut = self._book.start().moved(k, event.position, k)
        return msgspec.structs.replace(event, position=self._book.remember(cut))

    async def _owner(self, stream: StreamId) -> int | None:
        for k, member in enumerate(self.members):
            if await member._stream_version(stream) is not None:
                return k
        return None

    async def _stream_version(self, stream: StreamId) -> int | None:
        k = await self._owner(stream)
        return None if k is None else await self.members[k]._stream_version(stream)

    async def _read_stream_page(
        self, stream: StreamId, from_sequence: int | None, backward: bool, limit: int
    ) -> list[RecordedEvent]:
        k = await self._owner(stream)
        if k is None:
            return []
        page = await self.members[k]._read_stream_page(stream, from_sequence, backward, limit)
        return [self._alone(k, e) for e in page]

    async def _get_event(self, event_id: str) -> RecordedEvent | None:
        for k, member in enumerate(self.members):
            event = await member._get_event(event_id)
            if event is not None:
                return self._alone(k, event)
        return None

    async def _load_snapshot(self, stream: StreamId) -> Snapshot | None:
        k = await self._owner(stream)
        return None if k is None else await self.members[k]._load_snapshot(stream)

    async def list_streams(
        self,
        domain: str | None = None,
        prefix: str | None = None,
        limit: int | None = None,
        tenant: str | None = None,
    ) -> AsyncIterator[StreamInfo]:
        """Every member's streams, member by member (in the order of their names)."""
        remaining = limit
        for member in self.members:
            async for info in member.list_streams(domain, prefix, remaining, tenant):
                yield info
                if remaining is not None:
                    remaining -= 1
            if remaining is not None and remaining <= 0:
                return

    async def _list_streams_page(
        self, domain: str | None, prefix: str | None, cursor: int | None, limit: int
    ) -> tuple[list[StreamInfo], int | None]:
        k, inner = (0, None) if cursor is None else divmod(cursor, 1 << _CURSOR_BITS)
        while k < len(self.members):
            page, nxt = await self.members[k]._list_streams_page(domain, prefix, inner, limit)
            if page:
                return page, (k << _CURSOR_BITS) | (nxt or 0)
            k, inner = k + 1, None
        return [], None
