"""The tenant filters reads routed through an archive use (``chronik.store.tenant_reads``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import chronik
from chronik import EventData, StreamId
from chronik.messages import RecordedEvent
from chronik.store.records import ReadPage
from chronik.store.tenant_reads import of_tenant, page_of_tenant


async def _log() -> list[RecordedEvent]:
    async with chronik.open_store("memory://") as store:
        for n in range(6):
            tenant = ("", "acme", "beta")[n % 3]
            await store.append(StreamId("d", f"s{n}", tenant), [EventData("e", {"n": n})])
        return [e async for e in store.read_all()]


async def _iter(events: list[RecordedEvent]) -> AsyncIterator[RecordedEvent]:
    for event in events:
        yield event


async def test_of_tenant_keeps_one_tenant_up_to_the_limit() -> None:
    """The default tenant "" is a tenant like any other; None keeps every event."""
    log = await _log()
    default = [e async for e in of_tenant(_iter(log), "", 5)]
    assert [e.stream.aggregate_id for e in default] == ["s0", "s3"]
    assert len([e async for e in of_tenant(_iter(log), "acme", 1)]) == 1
    assert [e async for e in of_tenant(_iter(log), None, None)] == log
    assert [e async for e in of_tenant(_iter(log), "acme", 0)] == []


async def test_a_filtered_page_says_how_far_it_was_read() -> None:
    """A page that loses events to the filter is scanned up to its last event, so a
    subscription goes on from there instead of reading the same page again."""
    log = await _log()
    page = page_of_tenant(ReadPage(log, None), "beta")
    assert [e.stream.tenant for e in page.events] == ["beta", "beta"]
    assert page.scanned == log[-1].position
    whole = ReadPage([e for e in log if e.stream.tenant == "acme"], None)
    assert page_of_tenant(whole, "acme") is whole
