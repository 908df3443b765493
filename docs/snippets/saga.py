import asyncio

import msgspec

import chronik
from chronik.deadlines import ManualClock
from chronik.sagas import Saga, SagaContext

registry = chronik.EventRegistry()


@registry.event()
class OrderPlaced(msgspec.Struct):
    order_id: str


@registry.event()
class OrderCancelled(msgspec.Struct):
    reason: str


def decide(command: chronik.Command, state: dict) -> object:
    if command.type == "Place":
        return OrderPlaced(command.aggregate_id)
    return OrderCancelled(command.payload["reason"])


def evolve(state: dict, event: object) -> dict:
    return {"cancelled": isinstance(event, OrderCancelled)}


class Payment(msgspec.Struct):
    paid: bool = False


payment: Saga[Payment] = Saga("payment", state=Payment, associate="order_id")


@payment.starts_with("OrderPlaced")
def placed(state: Payment, event: chronik.RecordedEvent, ctx: SagaContext) -> Payment:
    ctx.schedule("unpaid", after=15 * 60)  # if not paid within 15 minutes ...
    return state


@payment.on_deadline("unpaid")
def unpaid(state: Payment, event: chronik.RecordedEvent, ctx: SagaContext) -> Payment:
    ctx.send(chronik.Command(domain="order", aggregate_id=ctx.instance_id, type="Cancel",
                             payload={"reason": "not paid in time"}))  # ... cancel
    ctx.end()
    return state


async def main() -> None:
    clock = ManualClock()  # tests move time; production leaves the wall clock
    app = chronik.Chronik(store="memory://", registry=registry, clock=clock)
    app.add_decider("order", decide, evolve, dict)
    app.add_saga(payment)  # runs inside `async with app`, its deadlines too
    async with app:
        placed = await app.dispatch(
            chronik.Command(domain="order", aggregate_id="o-1", type="Place")
        )
        await app.wait_for(placed.position)  # the saga has recorded its deadline
        cancelled = app.store.subscribe(placed.position, types=["OrderCancelled"])
        clock.advance(16 * 60)  # the app's deadline scheduler fires it, the saga cancels
        async with asyncio.timeout(5), cancelled:
            await anext(cancelled)  # the cancel command's event (no polling)
        async for event in app.store.read_stream(chronik.StreamId("order", "o-1")):
            print(event.sequence, event.type, event.json())


asyncio.run(main())
