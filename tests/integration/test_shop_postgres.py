"""The shop on PostgreSQL: commands, the loyalty saga, both read models and the outbox."""

from __future__ import annotations

import asyncio

import chronik
from chronik.outbox import OutboxAdmin
from chronik.projections import ProjectionRunner, query
from examples.shop.app import build_app, projections

ITEMS = [
    {"sku": "book", "price_cents": 1500, "qty": 2},
    {"sku": "pen", "price_cents": 250, "qty": 3},
]


def cmd(domain: str, aggregate_id: str, type_: str, **payload: object) -> chronik.Command:
    return chronik.Command(domain=domain, aggregate_id=aggregate_id, type=type_, payload=payload)


async def test_the_shop_runs_on_postgres(postgres_url: str) -> None:
    """Saga round trip, receipts and customer summary, and the outbox row, on PostgreSQL."""
    async with build_app(postgres_url) as app:
        async with ProjectionRunner(app.store, projections(app)) as runner:
            await app.dispatch(cmd("customer", "c1", "CreateCustomer", name="Ada", email="a@x"))
            await app.dispatch(
                cmd("transaction", "t1", "CreateTransaction", customer_id="c1", items=ITEMS)
            )
            await app.dispatch(cmd("transaction", "t1", "CompleteTransaction"))
            async with asyncio.timeout(20):
                while (await app.load("customer", "c1")).points != 37:
                    await asyncio.sleep(0.02)
                head = await app.store.head()
                assert head is not None
                await runner.wait_for(head)
        assert await query(app.store, "receipts", "receipts") == [
            {"transaction_id": "t1", "customer_id": "c1", "amount_cents": 3750}
        ]
        (summary,) = await query(app.store, "customer_summary", "customer_summary")
        assert (summary["loyalty_points"], summary["total_spent_cents"]) == (37, 3750)
        (message,) = await OutboxAdmin(app.store).messages()
        assert message["topic"] == "customer.registered" and message["state"] == "pending"
