"""`make run`: a short shop scenario on the SQLite store, printing what it does.

Registers a customer, places an order, awards loyalty points atomically with the order's
submission, shows a stale write being refused and a retry being idempotent, reads everything
back, and prints what a live subscription saw. Store: $CHRONIK_STORE or ./data/events.db.
"""

from __future__ import annotations

import asyncio
import os

import chronik
from examples.shop.events import (
    CustomerRegistered,
    ItemAdded,
    OrderPlaced,
    OrderSubmitted,
    PointsAwarded,
    registry,
)

STORE = os.environ.get("CHRONIK_STORE", "sqlite:///data/events.db")


def say(text: str) -> None:
    print(text, flush=True)


async def main() -> None:
    async with chronik.open_store(STORE) as store:
        say(f"chronik {chronik.__version__}: store {STORE}")
        seen: list[chronik.RecordedEvent] = []
        live = store.subscribe(after=await store.head())

        async def follow(count: int) -> None:
            async for event in live:
                seen.append(event)
                if len(seen) == count:
                    return

        follower = asyncio.create_task(follow(7))  # this scenario appends 7 events
        run = chronik.new_event_id()[-8:]
        meta = {"correlation_id": f"demo-{run}"}

        customer = chronik.StreamId("customer", f"cust-{run}")
        await store.append(
            customer,
            [registry.to_event_data(CustomerRegistered("Ada", "ada@example.com"), meta)],
            expected=chronik.NO_STREAM,
        )
        say(f"registered {customer}")

        order = chronik.StreamId("order", f"ord-{run}")
        lines = [ItemAdded("book-42", 2, 1500), ItemAdded("pen-7", 3, 250)]
        placed = await store.append(
            order,
            [registry.to_event_data(e, meta) for e in [OrderPlaced(customer.aggregate_id), *lines]],
            expected=chronik.NO_STREAM,
        )
        say(f"placed {order}: sequences {placed.first_sequence}..{placed.last_sequence}")

        total = sum(line.quantity * line.unit_price_cents for line in lines)
        loyalty = chronik.StreamId("loyalty", customer.aggregate_id)
        async with store.transaction() as tx:  # both streams or neither
            tx.append(
                order,
                [registry.to_event_data(OrderSubmitted(total), meta)],
                expected=placed.last_sequence,
            )
            tx.append(
                loyalty,
                [registry.to_event_data(PointsAwarded(order.aggregate_id, total // 100), meta)],
                expected=chronik.NO_STREAM,
            )
        say(f"submitted {order} and awarded {total // 100} points in one unit of work")

        try:
            await store.append(
                order,
                [registry.to_event_data(ItemAdded("late", 1, 1))],
                expected=placed.last_sequence,
            )
        except chronik.WrongExpectedVersion as err:
            say(f"refused a stale write: {err}")

        retry = [registry.to_event_data(ItemAdded("gift-wrap", 1, 300), meta)]
        first = await store.append(order, retry, expected=tx.results[0].last_sequence)
        again = await store.append(order, retry, expected=tx.results[0].last_sequence)
        say(
            f"retried an append with the same event ids: same result = {first == again}, "
            f"stream version {await store.stream_version(order)}"
        )

        say(f"{order}:")
        async for event in store.read_stream(order):
            say(f"  {event.sequence}  {event.type:<18} {registry.decode(event)}")

        say("newest 5 events in the store:")
        async for event in store.read_all(backward=True, limit=5):
            say(f"  @{event.position}  {event.stream}  {event.type}")

        await asyncio.wait_for(follower, 5)
        await live.close()
        say(
            f"the live subscription received {len(seen)} events: " + ", ".join(e.type for e in seen)
        )
        streams = len([s async for s in store.list_streams()])
        say(f"store now holds {streams} streams, head position {await store.head()}")


if __name__ == "__main__":
    asyncio.run(main())
