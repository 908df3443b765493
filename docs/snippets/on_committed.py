import asyncio

import msgspec

import chronik

registry = chronik.EventRegistry()


@registry.event("order.placed")
class OrderPlaced(msgspec.Struct):
    order_id: str


def decide(command: chronik.Command, state: dict) -> object:
    if state:
        raise chronik.CommandRejected("already placed")
    return OrderPlaced(command.aggregate_id)


app = chronik.Chronik(store="memory://", registry=registry)
app.add_decider("order", decide=decide, evolve=lambda s, e: {"placed": True})


@app.on_committed("order.placed")  # a type, a list of types, or a predicate
async def warm_cache(event: chronik.RecordedEvent) -> None:
    print("committed:", event.type, event.stream.aggregate_id)  # after dispatch returned


async def main() -> None:
    async with app:  # the handlers run while the app is open
        place = chronik.Command(domain="order", aggregate_id="o-1", type="Place")
        await app.dispatch(place)
        try:
            await app.dispatch(place)  # rejected: nothing committed, nothing emitted
        except chronik.CommandRejected as err:
            print("rejected:", err.reason)
    # leaving the block drains the queue (within close's grace); at most once: use a
    # projection for effects that must not be lost
    warm_cache.remove()


asyncio.run(main())
