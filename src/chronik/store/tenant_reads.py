"""Reads of one tenant's events: the reference versions every store falls back on.

``StoreReader`` (``chronik.store.read``) takes ``tenant=`` on ``read_all``, ``read_page``,
``read_query``, ``read_query_payloads``, ``list_streams`` and ``subscribe``: None reads every
tenant, "" the default tenant. Memory, SQLite and PostgreSQL override ``_read_tenant_page`` with
a tenant index (each event row carries its stream's tenant); the other adapters filter the
global order here, page by page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar, cast

from chronik.errors import ValidationError
from chronik.messages import JSON, TENANT_RE, Position, RecordedEvent, StreamInfo
from chronik.store.records import ReadPage
from chronik.store.tenant_conditions import scoped, write_scoped

if TYPE_CHECKING:
    from chronik.dcb import Query
    from chronik.messages import AppendResult
    from chronik.store.base import EventStore
    from chronik.store.read import StoreReader
    from chronik.store.records import WriteUnit

__all__ = [
    "TenantReads",
    "check_tenant_filter",
    "filtered_page",
    "filtered_query_page",
    "of_tenant",
    "page_of_tenant",
    "payload_rows",
]

_PAGE = 1000


def check_tenant_filter(tenant: object) -> None:
    """ValidationError unless ``tenant`` is None (every tenant) or a tenant name ("" is the
    default tenant)."""
    if tenant is None or tenant == "":
        return
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant):
        raise ValidationError(
            f"invalid tenant {tenant!r}: expected [a-z0-9][a-z0-9_.-]{{0,63}}", field="tenant"
        )


class TenantReads:
    """The page readers of one tenant (``StoreReader`` mixes them in); adapters with a tenant
    index override ``_read_tenant_page``."""

    #: True when the adapter's own condition checks honour ``ConditionCheck.tenant``; else
    #: ``_write_scoped`` does it (``chronik.store.tenant_conditions``).
    native_tenant_conditions: ClassVar[bool] = False

    async def _write_scoped(self, unit: WriteUnit) -> list[AppendResult]:
        """``_write``, with the unit's DCB conditions counting their tenant's events only."""
        store = cast("EventStore", self)
        if self.native_tenant_conditions or not scoped(unit):
            return await store._write(unit)
        return await write_scoped(store, unit)

    async def _read_tenant_page(
        self,
        tenant: str,
        after: Position | None,
        before: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        limit: int,
        backward: bool,
    ) -> list[RecordedEvent]:
        """``_read_all_page`` of one tenant."""
        reader = cast("StoreReader", self)
        return await filtered_page(reader, tenant, after, before, domains, types, limit, backward)

    async def _read_query_tenant_page(
        self, query: Query, tenant: str, cursor: Position | None, limit: int, backward: bool
    ) -> list[RecordedEvent]:
        """``_read_query_page`` of one tenant."""
        reader = cast("StoreReader", self)
        return await filtered_query_page(reader, query, tenant, cursor, limit, backward)

    async def _list_tenant_streams_page(
        self, tenant: str, domain: str | None, prefix: str | None, cursor: int | None, limit: int
    ) -> tuple[list[StreamInfo], int | None]:
        """``_list_streams_page`` of one tenant: at most ``limit`` streams, and the cursor to
        go on from, None once every stream was looked at (the page may be short before)."""
        reader = cast("StoreReader", self)
        page, after = await reader._list_streams_page(domain, prefix, cursor, limit)
        kept = [info for info in page if info.stream.tenant == tenant]
        return kept, (after if len(page) == limit else None)


async def filtered_page(
    reader: StoreReader,
    tenant: str,
    after: Position | None,
    before: Position | None,
    domains: tuple[str, ...] | None,
    types: tuple[str, ...] | None,
    limit: int,
    backward: bool,
) -> list[RecordedEvent]:
    """Up to ``limit`` events of ``tenant``: ``_read_all_page`` pages, filtered."""
    out: list[RecordedEvent] = []
    while True:
        page = await reader._read_all_page(after, before, domains, types, _PAGE, backward)
        for event in page:
            if event.stream.tenant == tenant:
                out.append(event)
                if len(out) == limit:
                    return out
        if len(page) < _PAGE:
            return out
        if backward:
            before = page[-1].position
        else:
            after = page[-1].position


async def filtered_query_page(
    reader: StoreReader,
    query: Query,
    tenant: str,
    cursor: Position | None,
    limit: int,
    backward: bool,
) -> list[RecordedEvent]:
    """Up to ``limit`` events of ``tenant`` that ``query`` matches: ``_read_query_page`` pages
    (a query's tags name few events), filtered."""
    out: list[RecordedEvent] = []
    while True:
        page = await reader._read_query_page(query, cursor, _PAGE, backward)
        for event in page:
            if event.stream.tenant == tenant:
                out.append(event)
                if len(out) == limit:
                    return out
        if len(page) < _PAGE:
            return out
        cursor = page[-1].position


async def of_tenant(
    events: AsyncIterator[RecordedEvent], tenant: str | None, limit: int | None
) -> AsyncIterator[RecordedEvent]:
    """The events of ``tenant`` (every one when None) among ``events``, at most ``limit``
    (reads routed through an archive, which has no tenant index)."""
    if limit == 0:
        return
    count = 0
    async for event in events:
        if tenant is None or event.stream.tenant == tenant:
            yield event
            count += 1
            if count == limit:
                return


def page_of_tenant(page: ReadPage, tenant: str) -> ReadPage:
    """``page`` with the events of ``tenant`` only; when that drops any, ``scanned`` says the
    page was read up to its last event (a subscription goes on from there)."""
    kept = [e for e in page.events if e.stream.tenant == tenant]
    if len(kept) == len(page.events):
        return page
    last = page.events[-1].position
    scanned = last if page.scanned is None or page.scanned < last else page.scanned
    return ReadPage(kept, scanned)


def payload_rows(page: list[RecordedEvent]) -> list[Any]:
    """``QueryPayloadRow`` s (``chronik.store.read``) of whole events."""
    return [
        (
            e.type,
            e.schema_version if e.content_type == JSON else e.content_type,
            e.payload,
            e.position.commit,
            e.position.index,
        )
        for e in page
    ]
