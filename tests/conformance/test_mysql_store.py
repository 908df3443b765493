"""The conformance suites and the Hypothesis model test against a real MariaDB (mysql://)."""

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
from chronik.testing.mariadb_server import MariaDBService
from tests.conformance.test_stateful import StoreMachine

_fresh = itertools.count(1)


class TestMySQLStore(
    EventStoreConformance,
    StoreArchiveConformance,
    LeaseConformance,
    DCBConformance,
    StreamStartConformance,
    TenantConformance,
):
    """mysql:// meets the store semantics (each store in a fresh database)."""

    @pytest.fixture
    async def make_store(self, mysql_url: str) -> AsyncIterator[StoreFactory]:
        stores: list[EventStore] = []

        async def make(**options: Any) -> EventStore:
            url = f"{mysql_url}_{len(stores)}"
            store = await chronik.open_store(url, **options).open()
            stores.append(store)
            return store

        yield make
        for store in stores:
            await store.close()


class MySQLStoreMachine(StoreMachine):
    """The model test on MariaDB; each example gets a fresh database."""

    server: MariaDBService | None = None

    def __init__(self) -> None:
        super().__init__()
        assert self.server is not None
        self.url = self.server.url(f"model{next(_fresh)}")


@pytest.fixture
def _bind_server(mariadb_server: MariaDBService) -> None:
    MySQLStoreMachine.server = mariadb_server


@pytest.mark.usefixtures("_bind_server")
class TestMySQLModel(MySQLStoreMachine.TestCase):  # type: ignore[name-defined,misc]
    """Random appends, retries and units on MariaDB match the plain model."""

    settings = settings(max_examples=15, stateful_step_count=20, deadline=None)
