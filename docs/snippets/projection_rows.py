import asyncio

import chronik
from chronik.projections import Projection, ProjectionProcessor, ReadModel, Table, query

totals = Projection(
    "totals",
    tables=[Table("totals", {"id": str, "customer": str, "amount": int}, primary_key="id")],
)


@totals.on("order.placed")
def placed(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    order = event.json()
    # the whole row, in the table's column order: the cheapest write (catch-up of many events);
    # the same as rm.upsert("totals", id=..., customer=..., amount=...)
    rm.upsert_row("totals", (event.stream.aggregate_id, order["customer"], order["amount"]))


async def main() -> None:
    async with chronik.open_store("sqlite:///data/orders.db") as store:
        order = chronik.StreamId("order", "o-1")
        last = await store.append(
            order, [chronik.EventData("order.placed", {"customer": "c-7", "amount": 42})]
        )
        async with ProjectionProcessor(store, totals) as projection:
            await projection.wait_for(last.position)
        print(await query(store, "totals", "totals"))  # [{'id': 'o-1', 'customer': 'c-7', ...}]


asyncio.run(main())
