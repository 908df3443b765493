"""The conformance suite against every embedded adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.store.base import EventStore
from chronik.testing.conformance import EventStoreConformance, StoreFactory
from chronik.testing.conformance_leases import LeaseConformance


class TestMemoryStore(EventStoreConformance, LeaseConformance):
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


class TestSQLiteStore(EventStoreConformance, LeaseConformance):
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
