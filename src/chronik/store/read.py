"""The read side of the store port: streams, the global order, followers' pages, stream lists.

``StoreReader`` holds the read template methods (input checked once, reads paged by
``READ_PAGE``) over the primitives each adapter implements (``_read_stream_page``,
``_read_all_page``, ``_head`` ...); ``EventStore`` (``chronik.store.base``) adds the write side.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeAlias, cast

from chronik.dcb import Query
from chronik.errors import StreamDeleted, ValidationError
from chronik.messages import JSON, Position, RecordedEvent, StreamId, StreamInfo
from chronik.store import archived_reads as archived
from chronik.store import tenant_reads
from chronik.store.lifecycle import StoreLifecycle
from chronik.store.records import ReadPage
from chronik.store.tenant_reads import TenantReads, check_tenant_filter
from chronik.store.validation import check_event_id, check_filters, check_limit, check_query

if TYPE_CHECKING:
    from chronik.archive.archive import Archive
    from chronik.store.base import EventStore

__all__ = ["READ_PAGE", "PayloadRow", "QueryPayloadRow", "StoreReader"]

READ_PAGE: Final = 1000
#: What folding a stream needs of a stored event, in this order: (sequence, type, the schema
#: version of a JSON payload or else a value no schema version equals (its content type, -1),
#: payload). A tuple, not a RecordedEvent: no object per event.
PayloadRow: TypeAlias = Sequence[Any]
#: What folding the events of a DCB query needs of each, in this order: (type, the schema
#: version of a JSON payload or else a value no schema version equals, payload, and the two
#: parts of its position: ``Position(row[3], row[4])``). No object per event.
QueryPayloadRow: TypeAlias = Sequence[Any]


class StoreReader(TenantReads, StoreLifecycle):
    """The reads every store offers, paged over the adapter's page readers."""

    #: True when no event can commit at or before a position ``head()`` has returned (commit
    #: order is position order: memory, SQLite). Filtered readers then skip to the head
    #: instead of rescanning events they do not want.
    head_bounds_reads: ClassVar[bool] = False
    archive: Archive | None  # chronik.store.archive_ops: reads go through it when attached

    def _through_archive(self) -> EventStore | None:
        """The store when an archive is attached (chronik.store.archived_reads routes)."""
        return cast("EventStore", self) if self.archive is not None else None

    # --- reading ------------------------------------------------------------------------------

    async def stream_version(self, stream: StreamId) -> int | None:
        """The last sequence of ``stream``, or None when it has no events (or reads empty after
        a soft delete); StreamDeleted when it is tombstoned."""
        await self._ready()
        version = await self._stream_version(stream)
        if version is None and await self._tombstoned(stream):
            raise StreamDeleted(stream)
        return version

    async def head(self) -> Position | None:
        """The position of the last committed event, or None when the store is empty."""
        await self._ready()
        return await self._head()

    async def read_stream(
        self,
        stream: StreamId,
        from_sequence: int | None = None,
        backward: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """The events of one stream from ``from_sequence`` (inclusive) in either direction.

        ``from_sequence=None`` starts at the beginning (forward) or the end (backward).
        """
        check_limit(limit)
        if from_sequence is not None and (type(from_sequence) is not int or from_sequence < 0):
            raise ValidationError(f"invalid from_sequence {from_sequence!r}", field="from")
        await self._ready()
        if (routed := self._through_archive()) is not None:
            async for event in archived.read_stream(routed, stream, from_sequence, backward, limit):
                yield event
            return
        remaining = limit
        cursor = from_sequence
        while remaining is None or remaining > 0:
            size = READ_PAGE if remaining is None else min(READ_PAGE, remaining)
            page = await self._read_stream_page(stream, cursor, backward, size)
            if not page and cursor == from_sequence and await self._tombstoned(stream):
                raise StreamDeleted(stream)
            for event in page:
                yield event
            if len(page) < size:
                return
            if remaining is not None:
                remaining -= len(page)
            cursor = page[-1].sequence + (-1 if backward else 1)
            if cursor < 0:
                return

    async def read_stream_payloads(
        self, stream: StreamId, from_sequence: int | None = None, limit: int = READ_PAGE
    ) -> list[PayloadRow]:
        """One page (forward, at most ``limit``) of ``stream`` from ``from_sequence`` as
        ``PayloadRow`` s: what folding a stream into a state needs and nothing more (no ids,
        positions or metadata), for the repository's fast path. Read ``read_stream`` for the
        whole events."""
        check_limit(limit)
        await self._ready()
        if (routed := self._through_archive()) is not None:
            return await archived.read_stream_payloads(routed, stream, from_sequence, limit)
        return await self._read_stream_payloads(stream, from_sequence, limit)

    async def read_all(
        self,
        after: Position | None = None,
        domains: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        limit: int | None = None,
        backward: bool = False,
        before: Position | None = None,
        tenant: str | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """All events in commit order (newest first with ``backward=True``).

        Only events strictly after ``after`` and strictly before ``before`` are read; pass the last
        position you saw as ``after`` (forward) or ``before`` (backward) to page on. ``tenant``
        keeps one tenant's events ("" is the default tenant; None, every tenant).
        """
        check_limit(limit)
        domains_t, types_t = check_filters(domains, types)
        check_tenant_filter(tenant)
        await self._ready()
        if (routed := self._through_archive()) is not None:
            cap = limit if tenant is None else None  # one tenant's: filtered from every one's
            events = archived.read_all(routed, after, before, domains_t, types_t, cap, backward)
            async for event in tenant_reads.of_tenant(events, tenant, limit):
                yield event
            return
        remaining = limit
        while remaining is None or remaining > 0:
            size = READ_PAGE if remaining is None else min(READ_PAGE, remaining)
            if tenant is None:
                page = await self._read_all_page(after, before, domains_t, types_t, size, backward)
            else:
                page = await self._read_tenant_page(
                    tenant, after, before, domains_t, types_t, size, backward
                )
            for event in page:
                yield event
            if len(page) < size:
                return
            if remaining is not None:
                remaining -= len(page)
            if backward:
                before = page[-1].position
            else:
                after = page[-1].position

    async def read_query(
        self,
        query: Query,
        after: Position | None = None,
        limit: int | None = None,
        backward: bool = False,
        tenant: str | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """The events ``query`` matches, in the global order (newest first with ``backward``).

        Forward, only events after ``after``; backward, only events before it. A reader never
        passes an event whose transaction may still commit, so the position of the last event
        read is a safe ``AppendCondition.after`` for a decision made from what was read.
        ``tenant`` keeps one tenant's events (None: every tenant).
        """
        check_query(query)
        check_limit(limit)
        check_tenant_filter(tenant)
        if after is not None and not isinstance(after, Position):
            raise ValidationError(f"after must be a Position, got {after!r}", field="after")
        await self._ready()
        if (routed := self._through_archive()) is not None:
            cap = limit if tenant is None else None
            events = archived.read_query(routed, query, after, cap, backward)
            async for event in tenant_reads.of_tenant(events, tenant, limit):
                yield event
            return
        remaining = limit
        cursor = after
        while remaining is None or remaining > 0:
            size = READ_PAGE if remaining is None else min(READ_PAGE, remaining)
            if tenant is None:
                page = await self._read_query_page(query, cursor, size, backward)
            else:
                page = await self._read_query_tenant_page(query, tenant, cursor, size, backward)
            for event in page:
                yield event
            if len(page) < size:
                return
            if remaining is not None:
                remaining -= len(page)
            cursor = page[-1].position

    async def read_query_payloads(
        self,
        query: Query,
        after: Position | None = None,
        limit: int = READ_PAGE,
        tenant: str | None = None,
    ) -> list[QueryPayloadRow]:
        """One page (forward, at most ``limit``) of the events ``query`` matches after
        ``after`` as ``QueryPayloadRow`` s: what folding them into a decision's state needs and
        nothing more, for the DCB command path. The position of the last row is as safe an
        ``AppendCondition.after`` as ``read_query``'s; read ``read_query`` for whole events.
        ``tenant`` keeps one tenant's events (None: every tenant)."""
        check_query(query)
        check_limit(limit)
        check_tenant_filter(tenant)
        if after is not None and not isinstance(after, Position):
            raise ValidationError(f"after must be a Position, got {after!r}", field="after")
        await self._ready()
        if (routed := self._through_archive()) is not None:
            if tenant is not None:  # whole events of the tenant's page, as rows
                page = self.read_query(query, after, limit, tenant=tenant)
                return tenant_reads.payload_rows([e async for e in page])
            return await archived.read_query_payloads(routed, query, after, limit)
        return await self._read_query_payloads(query, after, limit, tenant)

    async def list_streams(
        self,
        domain: str | None = None,
        prefix: str | None = None,
        limit: int | None = None,
        tenant: str | None = None,
    ) -> AsyncIterator[StreamInfo]:
        """Streams with their versions, oldest first; filter by domain, aggregate id prefix
        and tenant ("" is the default tenant; None, every tenant)."""
        check_limit(limit)
        check_tenant_filter(tenant)
        await self._ready()
        remaining = limit
        cursor: int | None = None
        while remaining is None or remaining > 0:
            size = READ_PAGE if remaining is None else min(READ_PAGE, remaining)
            if tenant is None:
                page, cursor = await self._list_streams_page(domain, prefix, cursor, size)
            else:  # a page may come back short and the cursor go on: None says it ended
                page, cursor = await self._list_tenant_streams_page(
                    tenant, domain, prefix, cursor, size
                )
            for info in page:
                yield info
            if cursor is None or (tenant is None and len(page) < size):
                return
            if remaining is not None:
                remaining -= len(page)

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        """The stored event with this id, or None."""
        check_event_id(event_id)
        await self._ready()
        if (routed := self._through_archive()) is not None:
            return await archived.get_event(routed, event_id)
        return await self._get_event(event_id)

    async def read_page(
        self,
        after: Position | None,
        limit: int,
        domains: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        tenant: str | None = None,
    ) -> ReadPage:
        """Up to ``limit`` events after ``after`` in commit order (readers that keep their place).

        On stores where commit order is position order, a filtered page that comes back short
        also says up to where nothing else of the filter exists (``ReadPage.scanned``).
        ``tenant`` keeps one tenant's events (None: every tenant).
        """
        domains_t, types_t = check_filters(domains, types)
        check_tenant_filter(tenant)
        await self._ready()
        if (routed := self._through_archive()) is not None:
            routed_page = await archived.read_page(routed, after, limit, domains_t, types_t)
            return (
                routed_page if tenant is None else tenant_reads.page_of_tenant(routed_page, tenant)
            )
        sparse = domains_t is not None or types_t is not None or tenant is not None
        head = await self._head() if sparse and self.head_bounds_reads else None
        if tenant is None:
            page = await self._read_all_page(after, None, domains_t, types_t, limit, False)
        else:
            page = await self._read_tenant_page(
                tenant, after, None, domains_t, types_t, limit, False
            )
        scanned = head if head is not None and len(page) < limit else None
        return ReadPage(page, scanned)

    async def settled(self, after: Position | None) -> bool:
        """Whether no committed event after ``after`` is held back by a running transaction.

        Stores that commit in position order (memory, SQLite) are always settled.
        """
        await self._ready()
        return await self._settled(after)

    async def _tombstoned(self, stream: StreamId) -> bool:
        """Whether ``stream`` was hard-deleted; adapters with ``supports_deletion`` override it
        (asked only when a read of the stream came back empty)."""
        return False

    async def _settled(self, after: Position | None) -> bool:
        """Adapters whose transactions commit out of position order override this."""
        return True

    # --- what adapters implement ---------------------------------------------------------------

    async def _read_query_page(
        self, query: Query, cursor: Position | None, limit: int, backward: bool
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events ``query`` matches after ``cursor`` (before it, backward).

        This reference version filters the global order page by page; adapters with a tag
        index override it so a query costs what it matches, not the length of the log.
        """
        types = query.types()
        after, before = (None, cursor) if backward else (cursor, None)
        out: list[RecordedEvent] = []
        while True:
            page = await self._read_all_page(after, before, None, types, READ_PAGE, backward)
            for event in page:
                if query.matches(event):
                    out.append(event)
                    if len(out) == limit:
                        return out
            if len(page) < READ_PAGE:
                return out
            if backward:
                before = page[-1].position
            else:
                after = page[-1].position

    async def _read_query_payloads(
        self, query: Query, after: Position | None, limit: int, tenant: str | None = None
    ) -> list[QueryPayloadRow]:
        """``read_query_payloads``' page, of ``tenant`` when given (adapters override it)."""
        if tenant is None:
            page = await self._read_query_page(query, after, limit, False)
        else:
            page = await self._read_query_tenant_page(query, tenant, after, limit, False)
        return tenant_reads.payload_rows(page)

    @abc.abstractmethod
    async def _get_event(self, event_id: str) -> RecordedEvent | None: ...

    @abc.abstractmethod
    async def _stream_version(self, stream: StreamId) -> int | None: ...

    @abc.abstractmethod
    async def _head(self) -> Position | None: ...

    @abc.abstractmethod
    async def _read_stream_page(
        self, stream: StreamId, from_sequence: int | None, backward: bool, limit: int
    ) -> list[RecordedEvent]: ...

    async def _read_stream_payloads(
        self, stream: StreamId, from_sequence: int | None, limit: int
    ) -> list[PayloadRow]:
        """``read_stream_payloads``' page; adapters that can select fewer columns override it."""
        page = await self._read_stream_page(stream, from_sequence, False, limit)
        return [
            (
                e.sequence,
                e.type,
                e.schema_version if e.content_type == JSON else e.content_type,
                e.payload,
            )
            for e in page
        ]

    @abc.abstractmethod
    async def _read_all_page(
        self,
        after: Position | None,
        before: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        limit: int,
        backward: bool,
    ) -> list[RecordedEvent]: ...

    @abc.abstractmethod
    async def _list_streams_page(
        self, domain: str | None, prefix: str | None, cursor: int | None, limit: int
    ) -> tuple[list[StreamInfo], int | None]: ...
