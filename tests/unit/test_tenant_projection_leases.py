"""Projections per tenant: two projections of one handler for two tenants (each its own name
and table) run side by side on two nodes, each with its own lease and checkpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import chronik
from chronik.errors import ConfigurationError
from chronik.messages import EventData, RecordedEvent, StreamId
from chronik.projections import Projection, ProjectionRunner, ReadModel, Table, query
from chronik.projections.lanes import checkpoint_name
from chronik.store import leases


def count(event: RecordedEvent, rm: ReadModel) -> None:
    """The one handler both tenants' projections run."""
    table = f"orders_{rm.tenant or event.stream.tenant}"
    rm.upsert(table, order_id=event.stream.aggregate_id, seen=event.sequence)


def orders_of(tenant: str) -> Projection:
    """A tenant's projection: its own name (so its own lease and checkpoint) and table."""
    table = Table(f"orders_{tenant}", {"order_id": str, "seen": int}, "order_id")
    projection = Projection(f"orders_{tenant}", tables=[table], tenant=tenant)
    projection.on("placed")(count)
    return projection


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/p.db"


async def test_two_tenants_projections_run_side_by_side(url: str) -> None:
    """Node one runs acme's, node two beta's, at once: each holds its own lease and its table
    has its tenant's orders only; with beta's node stopped, acme's checkpoint moves on alone."""
    async with chronik.open_store(url) as store:
        for tenant, n in (("acme", 3), ("beta", 2)):
            for i in range(n):
                data = [EventData("placed", {})]
                await store.append(StreamId("order", f"{tenant}-{i}", tenant), data)
        acme, beta = orders_of("acme"), orders_of("beta")
        one = ProjectionRunner(store, [acme], owner="one", heartbeat=0.05)
        two = ProjectionRunner(store, [beta], owner="two", heartbeat=0.05)
        async with one, two:
            head = await store.head()
            assert head is not None
            async with asyncio.timeout(10):
                await one.wait_for(head)
                await two.wait_for(head)
            held = {lease.name: lease.owner for lease in await leases.holders(store)}
            await two.stop()  # beta's node stops; acme's goes on alone
            await store.append(StreamId("order", "acme-9", "acme"), [EventData("placed", {})])
            later = await store.head()
            assert later is not None
            async with asyncio.timeout(10):
                await one.wait_for(later)
        assert {v for k, v in held.items() if "orders_acme" in k} == {"one"}
        assert {v for k, v in held.items() if "orders_beta" in k} == {"two"}
        for tenant in ("acme", "beta"):
            ids = {e.stream.aggregate_id async for e in store.read_all(tenant=tenant)}
            rows = await query(store, f"orders_{tenant}", f"orders_{tenant}")
            assert sorted(r["order_id"] for r in rows) == sorted(ids)
        acme_cp = await store.load_checkpoint(checkpoint_name("orders_acme", 1), 0)
        beta_cp = await store.load_checkpoint(checkpoint_name("orders_beta", 1), 0)
        assert acme_cp is not None and acme_cp.position == later
        assert beta_cp is not None and beta_cp.position == head


def test_one_name_for_two_tenants_is_refused() -> None:
    """Two tenants' projections under one name would share a lease and a checkpoint: a runner
    refuses them."""
    store = chronik.open_store("memory://")
    first = Projection("orders", tenant="acme")
    second = Projection("orders", tenant="beta")
    for projection in (first, second):
        projection.on("placed")(count)
    with pytest.raises(ConfigurationError, match="registered twice"):
        ProjectionRunner(store, [first, second])
