"""Export a store's events as JSON lines (``chronik.lifecycle.format``), in global order, streamed.

The export is a consistent cut: it reads the store's head first and writes every event up to
it and nothing after, whatever other writers append meanwhile (on PostgreSQL the head is the
last position no running transaction can still come before). Only events are exported: they
are the source of truth. Snapshots are a cache (rebuilt on the next loads), read models are
rebuilt by their projections, and checkpoints, leases and outbox rows hold positions or state
of the source store that mean nothing in another one. A store with deletion
(``supports_deletion``) also exports each stream's own retention rules (its truncation point
included: where a soft delete, a truncation or a compaction left it), after the events.
An export of one tenant (``tenant="acme"``; "" is the default tenant) holds that tenant's
events and streams only; every event line names its stream's tenant, and an import keeps it.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from typing import IO, Final, NamedTuple, cast

from chronik.errors import ValidationError
from chronik.lifecycle.format import (
    encode_end,
    encode_event,
    encode_header,
    encode_retention,
)
from chronik.messages import Position
from chronik.store.base import EventStore
from chronik.store.tenant_reads import check_tenant_filter

__all__ = ["PROGRESS_EVERY", "ExportReport", "Progress", "export_events", "export_lines"]

#: A progress callback: called with the number of events done so far.
Progress = Callable[[int], None]
#: How many events pass between two progress calls.
PROGRESS_EVERY: Final = 1000
#: How many streams one page of the retention scan holds.
_RETENTION_PAGE: Final = 500


class ExportReport(NamedTuple):
    """What an export wrote: how many events, and the source's head it stopped at."""

    events: int
    head: Position | None
    after: Position | None


def store_kind(store: EventStore) -> str:
    """The kind of a store as the header names it: its URL scheme (``sqlite``, ``postgresql``)."""
    return store.url.split("://", 1)[0].lower() or type(store).__name__


async def export_lines(
    store: EventStore,
    *,
    after: Position | None = None,
    progress: Progress | None = None,
    report: list[ExportReport] | None = None,
    tenant: str | None = None,
) -> AsyncIterator[bytes]:
    """The lines of an export of ``store`` (each ending in a newline): the header, every event
    after ``after`` up to the head in global order, then the end line.

    ``progress`` is called with the count of events yielded every ``PROGRESS_EVERY`` events and
    at the end; ``report``, when given, receives the ExportReport once the end line is yielded.
    ``tenant`` exports one tenant's events and streams (None: every tenant's).
    """
    check_tenant_filter(tenant)
    if after is not None and not isinstance(after, Position):
        raise ValidationError(f"after must be a Position, got {after!r}", field="after")
    head = await store.head()
    yield encode_header(store_kind(store), head, after)
    count = 0
    if head is not None and (after is None or after < head):
        async for event in store.read_all(after=after, tenant=tenant):
            if event.position > head:
                break
            yield encode_event(event)
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(count)
    if progress is not None:
        progress(count)
    if store.supports_deletion:
        async for line in _retention_lines(store, tenant):
            yield line
    yield encode_end(count)
    if report is not None:
        report.append(ExportReport(count, head, after))


async def _retention_lines(store: EventStore, tenant: str | None) -> AsyncIterator[bytes]:
    """A retention line for each stream (of ``tenant``, when given) with rules of its own (a
    truncation point included)."""
    cursor: int | None = None
    while True:
        page, cursor = await store.retention_page(cursor, _RETENTION_PAGE)
        for entry in page:
            if tenant is not None and entry.stream.tenant != tenant:
                continue
            rules = entry.retention
            if rules.max_age is None and rules.max_count is None and not rules.truncate_before:
                continue
            yield encode_retention(entry.stream, rules)
        if cursor is None:
            return


async def export_events(
    store: EventStore,
    out: IO[bytes] | IO[str],
    *,
    after: Position | None = None,
    progress: Progress | None = None,
    tenant: str | None = None,
) -> ExportReport:
    """Write an export of ``store`` to ``out`` (a binary or text file): every event after
    ``after`` (all when None) up to the store's head when the export starts, in global order,
    with their ids, streams, sequences, payloads, metadata, tags and record times; only
    ``tenant``'s when given."""
    text = isinstance(out, io.TextIOBase)
    done: list[ExportReport] = []
    lines = export_lines(store, after=after, progress=progress, report=done, tenant=tenant)
    async for line in lines:
        if text:
            cast("IO[str]", out).write(line.decode())
        else:
            cast("IO[bytes]", out).write(line)
    out.flush()
    return done[0]
