"""The conformance suite and the Hypothesis model test against a real redis-server."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import settings

import chronik
from chronik.store.base import EventStore
from chronik.testing.conformance import EventStoreConformance, StoreFactory
from chronik.testing.conformance_archive import StoreArchiveConformance
from chronik.testing.conformance_dcb import DCBConformance
from chronik.testing.conformance_leases import LeaseConformance
from chronik.testing.conformance_stream_start import StreamStartConformance
from chronik.testing.conformance_tenants import TenantConformance
from chronik.testing.redis_server import RedisService
from tests.conformance.test_stateful import StoreMachine

_fresh = itertools.count(1)


class TestRedisStore(
    EventStoreConformance,
    StoreArchiveConformance,
    LeaseConformance,
    DCBConformance,
    StreamStartConformance,
    TenantConformance,
):
    """redis:// meets the store semantics (each store under a fresh key prefix)."""

    @pytest.fixture
    async def make_store(self, redis_url: str) -> AsyncIterator[StoreFactory]:
        stores: list[EventStore] = []

        async def make(**options: Any) -> EventStore:
            url = f"{redis_url}_{len(stores)}"
            store = await chronik.open_store(url, **options).open()
            stores.append(store)
            return store

        yield make
        for store in stores:
            await store.close()


class RedisStoreMachine(StoreMachine):
    """The model test on Redis; each example gets a fresh key prefix."""

    server: RedisService | None = None

    def __init__(self) -> None:
        super().__init__()
        assert self.server is not None
        self.url = self.server.url(prefix=f"model{next(_fresh)}")


@pytest.fixture
def _bind_server(redis_server: RedisService) -> None:
    RedisStoreMachine.server = redis_server


@pytest.mark.usefixtures("_bind_server")
class TestRedisModel(RedisStoreMachine.TestCase):  # type: ignore[name-defined,misc]
    """Random appends, retries and units on Redis match the plain model."""

    settings = settings(max_examples=15, stateful_step_count=20, deadline=None)
