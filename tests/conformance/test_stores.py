"""The conformance suite against every embedded adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import chronik
import chronik.store.sqlite.read as sqlite_read
from chronik.store.base import EventStore
from chronik.testing.conformance import EventStoreConformance, StoreFactory
from chronik.testing.conformance_archive import StoreArchiveConformance
from chronik.testing.conformance_dcb import DCBConformance
from chronik.testing.conformance_leases import LeaseConformance
from chronik.testing.conformance_stream_start import StreamStartConformance
from chronik.testing.conformance_tenants import TenantConformance


class TestMemoryStore(
    EventStoreConformance,
    LeaseConformance,
    DCBConformance,
    StreamStartConformance,
    StoreArchiveConformance,
    TenantConformance,
):
    """memory:// meets the store semantics."""

    @pytest.fixture
    async def make_store(self) -> AsyncIterator[StoreFactory]:
        stores: list[EventStore] = []

        async def make(**options: Any) -> EventStore:
            store = await chronik.open_store("memory://", **options).open()
            stores.append(store)
            return store

        yield make
        for store in stores:
            await store.close()


class TestSQLiteStore(
    EventStoreConformance,
    LeaseConformance,
    DCBConformance,
    StreamStartConformance,
    StoreArchiveConformance,
    TenantConformance,
):
    """sqlite:// meets the store semantics, at synchronous=normal (loop) and full (thread)."""

    @pytest.fixture(params=["normal", "full"])
    async def make_store(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> AsyncIterator[StoreFactory]:
        stores: list[EventStore] = []

        async def make(**options: Any) -> EventStore:
            url = f"sqlite:///{tmp_path}/s{len(stores)}.db?synchronous={request.param}"
            store = await chronik.open_store(url, **options).open()
            stores.append(store)
            return store

        yield make
        for store in stores:
            await store.close()


async def test_sqlite_read_all_resolves_more_streams_than_its_cache_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read_all page naming more new streams than the SQLite reader's stream cache holds
    still gives every event its own stream (the cache is emptied before the page's streams
    are added, not while)."""
    monkeypatch.setattr(sqlite_read, "_STREAM_CACHE_LIMIT", 3)
    async with chronik.open_store(f"sqlite:///{tmp_path}/c.db") as store:
        streams = [chronik.StreamId("cache", f"s{i}") for i in range(10)]
        for s in streams:
            await store.append(s, [chronik.EventData("t", {"n": s.aggregate_id})])
        events = [e async for e in store.read_all()]
        assert [e.stream for e in events] == streams
        assert [e.json()["n"] for e in events] == [s.aggregate_id for s in streams]
        assert [e.stream async for e in store.read_all(after=events[4].position)] == streams[5:]
