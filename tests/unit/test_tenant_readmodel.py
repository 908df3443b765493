"""Per-tenant read-model tables and projections that follow one tenant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.messages import Position
from chronik.projections import (
    Projection,
    ProjectionAdmin,
    ProjectionProcessor,
    ReadModel,
    Table,
    query,
)
from chronik.store.base import EventStore, TableWrite

COUNTS = Table("counts", {"id": str, "n": int}, primary_key="id", per_tenant=True)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/t.db"
    async with chronik.open_store(url) as s:
        yield s


def counts(tenant: str | None = None) -> Projection:
    """Events per aggregate id, per tenant; the handler knows nothing of tenants."""
    p = Projection("counts", tables=[COUNTS], tenant=tenant, batch_size=4)

    @p.on("added")
    async def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("counts", id=e.stream.aggregate_id)
        rm.upsert("counts", id=e.stream.aggregate_id, n=(row["n"] if row else 0) + 1)
        assert len(await rm.query("counts", id=e.stream.aggregate_id)) == 1

    return p


async def _add(store: EventStore, tenant: str, agg: str, times: int) -> Position:
    last = None
    for _ in range(times):
        last = await store.append(
            chronik.StreamId("c", agg, tenant), [chronik.EventData("added", {})]
        )
    assert last is not None
    return last.position


async def _settle(proc: ProjectionProcessor, position: Position) -> None:
    async with asyncio.timeout(10):
        await proc.wait_for(position)


def _rows(rows: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return sorted((r["tenant"], r["id"], r["n"]) for r in rows)


async def test_rows_are_kept_per_tenant_and_survive_a_rebuild(store: EventStore) -> None:
    """The same aggregate id in two tenants gives two rows; reads by tenant see one; a
    rebuild yields the same rows."""
    await _add(store, "acme", "x", 3)
    await _add(store, "", "x", 1)
    last = await _add(store, "beta", "x", 2)
    async with ProjectionProcessor(store, counts(), heartbeat=0.02) as proc:
        await _settle(proc, last)
        expected = [("", "x", 1), ("acme", "x", 3), ("beta", "x", 2)]
        assert _rows(await query(store, "counts", "counts")) == expected
        assert _rows(await query(store, "counts", "counts", tenant="acme")) == [("acme", "x", 3)]
        assert _rows(await store.read_table("counts__g1", tenant="")) == [("", "x", 1)]
        await ProjectionAdmin(store).request("counts", "rebuild")
        async with asyncio.timeout(10):
            while (await store.read_table("chronik_projections"))[0]["generation"] != 2:
                await asyncio.sleep(0.01)
        await _settle(proc, last)
        assert _rows(await query(store, "counts", "counts")) == expected


async def test_a_projection_can_follow_one_tenant(store: EventStore) -> None:
    """Projection(tenant=) handles that tenant's events only, stored and live."""
    await _add(store, "acme", "x", 2)
    await _add(store, "beta", "y", 5)
    async with ProjectionProcessor(store, counts("acme"), heartbeat=0.02) as proc:
        await _add(store, "beta", "z", 1)
        last = await _add(store, "acme", "w", 1)
        await _settle(proc, last)
        assert _rows(await query(store, "counts", "counts")) == [
            ("acme", "w", 1),
            ("acme", "x", 2),
        ]


def test_a_per_tenant_table_keys_rows_by_tenant_first() -> None:
    """The tenant column leads the primary key and every index; the name is reserved."""
    t = Table("t", {"id": str, "v": int}, primary_key="id", indexes=[["v"]], per_tenant=True)
    assert t.primary_key == ("tenant", "id") and t.indexes == (("tenant", "v"),)
    assert t.columns[0] == ("tenant", "TEXT")
    with pytest.raises(chronik.ValidationError):
        Table("t", {"tenant": str}, primary_key="tenant", per_tenant=True)


async def test_writes_outside_the_events_tenant_are_refused() -> None:
    """A handler cannot write another tenant's row; without an event a tenant is needed."""
    async with chronik.open_store("memory://") as store:
        spec = COUNTS.spec(1)
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("ensure", spec.name, spec=spec)])
        rm = ReadModel(store, {"counts": COUNTS}, 1)
        with pytest.raises(chronik.ValidationError):
            rm.upsert("counts", id="x", n=1)  # no event, no tenant
        await _add(store, "acme", "x", 1)
        (event,) = [e async for e in store.read_all()]
        rm.begin(event)
        with pytest.raises(chronik.ValidationError):
            rm.upsert("counts", id="x", n=1, tenant="beta")
        rm.upsert("counts", id="x", n=1)
        assert await rm.get("counts", id="x") == {"tenant": "acme", "id": "x", "n": 1}
        scoped = ReadModel(store, {"counts": COUNTS}, 1, tenant="beta")
        assert await scoped.get("counts", id="x") is None


def test_a_bad_projection_tenant_is_refused() -> None:
    """A tenant that breaks the naming rule is a ValidationError."""
    with pytest.raises(chronik.ValidationError):
        Projection("p", tenant="Bad Tenant")
