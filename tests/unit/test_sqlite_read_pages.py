"""SQLite read_all pages: narrow rows (metadata, content type and tags left out while NULL) read
the same events as the wide rows ``get_event`` reads, whichever mix of rows a page holds."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import chronik
from chronik.store.base import EventStore


def _event(i: int, kind: str) -> chronik.EventData:
    """Event ``i``: plain, or with metadata, a content type or tags (``kind``)."""
    if kind == "plain":
        return chronik.EventData("t.plain", {"i": i})
    if kind == "meta":
        return chronik.EventData("t.meta", {"i": i}, metadata={"correlation_id": f"c{i}"})
    if kind == "bytes":
        return chronik.EventData("t.bytes", b"\x00raw", content_type="application/octet-stream")
    return chronik.EventData("t.tagged", {"i": i}, tags=[f"k:{i}", "all:x"])


def _kinds() -> list[str]:
    """1,000 plain events, 1,000 with extras (a wide stretch), 1,300 with one in 50 extras."""
    head = ["plain"] * 1000
    extras = [("meta", "bytes", "tags")[i % 3] for i in range(1000)]
    tail = [("meta", "tags")[i // 50 % 2] if i % 50 == 7 else "plain" for i in range(1300)]
    return head + extras + tail


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    """A SQLite store holding ``_kinds()`` events over 7 streams."""
    async with chronik.open_store(f"sqlite:///{tmp_path / 'e.db'}") as s:
        kinds = _kinds()
        for start in range(0, len(kinds), 100):
            stream = chronik.StreamId("pages", f"s{start % 7}")
            batch = [_event(start + k, kind) for k, kind in enumerate(kinds[start : start + 100])]
            await s.append(stream, batch)
        yield s


async def _check(store: EventStore, events: list[chronik.RecordedEvent]) -> None:
    """Each event equals the one get_event reads (every column)."""
    for e in events:
        assert e == await store.get_event(e.event_id)


async def test_forward_pages_match_wide_rows(store: EventStore) -> None:
    """Forward read_all: every event, each as get_event reads it, extras included."""
    events = [e async for e in store.read_all()]
    assert len(events) == len(_kinds())
    await _check(store, events)
    kinds = _kinds()
    assert [e.content_type for e in events].count("application/octet-stream") == kinds.count(
        "bytes"
    )
    assert sum(1 for e in events if e.tags) == kinds.count("tags") > 333
    assert sum(1 for e in events if e.metadata.correlation_id) == kinds.count("meta")


async def test_backward_and_bounded_pages_match(store: EventStore) -> None:
    """Backward pages and after/before bounds cross the plain/extras boundaries alike."""
    forward = [e async for e in store.read_all()]
    backward = [e async for e in store.read_all(backward=True)]
    assert backward == forward[::-1]
    window = [e async for e in store.read_all(after=forward[900].position, limit=1500)]
    assert window == forward[901:2401]
    before = [e async for e in store.read_all(before=forward[2100].position, backward=True)]
    assert before == forward[:2100][::-1]


async def test_typed_and_filtered_pages_match(store: EventStore) -> None:
    """One-type pages (the type not read) and several-type pages carry their extras."""
    forward = [e async for e in store.read_all()]
    for etype in ("t.plain", "t.meta", "t.bytes", "t.tagged"):
        typed = [e async for e in store.read_all(types=[etype])]
        assert typed == [e for e in forward if e.type == etype]
    two = [e async for e in store.read_all(types=["t.meta", "t.tagged"], domains=["pages"])]
    assert two == [e for e in forward if e.type in ("t.meta", "t.tagged")]
    assert [e async for e in store.read_all(domains=["other"])] == []


async def test_pages_go_wide_on_extras_and_back(store: EventStore) -> None:
    """A page mostly of extras switches the reader to wide rows; a page ending plain, back."""
    reader = store._read_all_page  # the adapter's page primitive, as StoreReader pages it
    first = await reader(None, None, None, None, 1000, False)
    assert store._wide_pages is False  # type: ignore[attr-defined]
    second = await reader(first[-1].position, None, None, None, 1000, False)
    assert store._wide_pages is True  # type: ignore[attr-defined]
    third = await reader(second[-1].position, None, None, None, 1000, False)
    assert store._wide_pages is False  # type: ignore[attr-defined]
    await _check(store, first + second + third)


async def test_extras_read_in_the_page_snapshot(tmp_path: Path) -> None:
    """A change committed between a narrow page and its extras read does not mix into it."""
    path = tmp_path / "race.db"
    async with chronik.open_store(f"sqlite:///{path}") as store:
        stream = chronik.StreamId("pages", "race")
        await store.append(stream, [_event(i, "tags" if i == 5 else "plain") for i in range(10)])
        before = [e async for e in store.read_all()]  # the stream is cached: two fetches a page
        calls: list[str] = []

        def hook(op: str, unit: object) -> None:
            calls.append(op)
            if len(calls) == 2:  # the extras read: another connection clears the tags first
                with sqlite3.connect(path) as other:
                    other.execute("UPDATE chronik_events SET tags = NULL")

        store.fault_hook = hook
        after = [e async for e in store.read_all()]
        assert calls == ["fetch", "fetch"]
        assert after == before and after[5].tags == ("all:x", "k:5")
        assert [e.tags async for e in store.read_all()][5] == ()  # the next read sees it
