"""The conformance suite and the Hypothesis model test against lmdb:// (py-lmdb), at sync=normal
and sync=full."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
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
from tests.conformance.test_stateful import StoreMachine

pytest.importorskip("lmdb")


class TestLmdbStore(
    EventStoreConformance,
    StoreArchiveConformance,
    LeaseConformance,
    DCBConformance,
    StreamStartConformance,
    TenantConformance,
):
    """lmdb:// meets the store semantics at sync=normal and sync=full (a fresh directory each)."""

    @pytest.fixture(params=["normal", "full"])
    async def make_store(
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> AsyncIterator[StoreFactory]:
        stores: list[EventStore] = []

        async def make(**options: Any) -> EventStore:
            url = f"lmdb:///{tmp_path}/s{len(stores)}?sync={request.param}"
            store = await chronik.open_store(url, **options).open()
            stores.append(store)
            return store

        yield make
        for store in stores:
            await store.close()


class LmdbStoreMachine(StoreMachine):
    """The model test on lmdb:// (a small map, so it grows during the examples)."""

    url = "lmdb:///{tmp}/model?map_size=1048576"


TestLmdbModel = LmdbStoreMachine.TestCase
TestLmdbModel.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)


async def test_names_past_the_key_limit_round_trip(tmp_path: Path) -> None:
    """Names whose UTF-8 exceeds LMDB's 511-byte key limit (a 256-character aggregate id, a
    128-character tag, a long read-model key) are stored, found and told apart."""
    from chronik.store.base import TableSpec, TableWrite

    async with chronik.open_store(f"lmdb:///{tmp_path}/long") as store:
        long_a = chronik.StreamId("long", "\u20ac" * 256)
        long_b = chronik.StreamId("long", "\u20ac" * 255 + "x")
        tag = "\U0001d11e" * 128
        await store.append(long_a, [chronik.EventData("t", {"n": 1}, tags=[tag])])
        await store.append(long_b, [chronik.EventData("t", {"n": 2})])
        assert [e.json()["n"] async for e in store.read_stream(long_a)] == [1]
        assert await store.stream_version(long_b) == 0
        found = [e.stream async for e in store.read_query(chronik.Query.of(tags=[tag]))]
        assert found == [long_a]
        with pytest.raises(chronik.AppendConditionFailed):
            await store.append_tagged(
                [chronik.EventData("t", {})],
                chronik.AppendCondition(chronik.Query.of(tags=[tag])),
            )
        spec = TableSpec("rm_long", (("id", "TEXT"), ("n", "INTEGER")), ("id",))
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("ensure", spec.name, spec=spec)])
            for i in range(2):
                row = {"id": "k" * 600 + str(i), "n": i}
                tx.write_tables([TableWrite.upsert(spec.name, row, ("id",))])
        rows = await store.read_table(spec.name, order_by=("n",))
        assert [(len(r["id"]), r["n"]) for r in rows] == [(601, 0), (601, 1)]


async def test_keywords_win_over_the_url_options(tmp_path: Path) -> None:
    """Options in the URL's query string apply, and a keyword given for the same option wins."""
    from chronik.store.lmdb import LmdbEventStore

    url = f"lmdb:///{tmp_path}/opts?sync=full&map_size=2097152&max_append_events=5"
    store = chronik.open_store(url)
    assert isinstance(store, LmdbEventStore)
    assert (store.sync, store.map_size, store.max_append_events) == ("full", 2097152, 5)
    direct = LmdbEventStore(url, sync="normal")
    assert (direct.sync, direct.map_size) == ("normal", 2097152)
