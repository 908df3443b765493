"""The command side on PostgreSQL: dispatch, idempotency across processes' apps, snapshots."""

from __future__ import annotations

import asyncio

import chronik
from examples.shop.app import build_app


def points(customer: str, n: int, command_id: str | None = None) -> chronik.Command:
    return chronik.Command(
        domain="customer",
        aggregate_id=customer,
        type="AddLoyaltyPoints",
        payload={"points": n},
        command_id=command_id,
    )


async def test_commands_and_snapshots_on_postgres(postgres_url: str) -> None:
    """Two apps on one PostgreSQL store: racing command ids append once; snapshots load."""
    async with build_app(postgres_url) as one, build_app(postgres_url) as two:
        created = await one.dispatch(
            chronik.Command(
                domain="customer",
                aggregate_id="c1",
                type="CreateCustomer",
                payload={"name": "Ada", "email": "a@x"},
            )
        )
        stored = [e async for e in one.store.read_stream(chronik.StreamId("customer", "c1"))]
        assert created.events == stored  # positions and times as the store recorded them
        results = await asyncio.gather(
            *(app.dispatch(points("c1", 1, f"p-{i}")) for i in range(120) for app in (one, two))
        )
        for a, b in zip(results[::2], results[1::2], strict=True):
            assert a.events == b.events and len(a.events) == 1
        await one.bus.repository.drain()
        await two.bus.repository.drain()
        snap = await one.store.load_snapshot(chronik.StreamId("customer", "c1"))
        assert snap is not None and snap.sequence >= 99
        assert (await one.load("customer", "c1")).points == 120
