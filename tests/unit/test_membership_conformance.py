"""The membership conformance suite on the store backend (memory and SQLite stores)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import chronik
from chronik.cluster.backend import MembershipBackend
from chronik.cluster.store_backend import StoreMembershipBackend
from chronik.store.base import EventStore
from chronik.testing.conformance_membership import MembershipConformance


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'm.db'}"
    async with chronik.open_store(url) as s:
        yield s


class TestStoreMembershipBackend(MembershipConformance):
    """StoreMembershipBackend passes the membership conformance suite."""

    @pytest.fixture
    def backends(self, store: EventStore) -> Callable[[], MembershipBackend]:
        return lambda: StoreMembershipBackend(store)
