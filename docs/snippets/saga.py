import asyncio

import msgspec

import chronik
from chronik.deadlines import DeadlineScheduler, ManualClock
from chronik.projections import ProjectionRunner
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
    app = chronik.Chronik(store="memory://", registry=registry)
    app.add_decider("order", decide, lambda state, event: state, dict)
    clock = ManualClock()  # tests move time; production uses the wall clock
    async with app, ProjectionRunner(app.store, [payment.projection(app.dispatch)]) as runner:
        placed = await app.dispatch(
            chronik.Command(domain="order", aggregate_id="o-1", type="Place")
        )
        await runner.wait_for(placed.position)  # the saga has recorded its deadline
        clock.advance(16 * 60)
        await DeadlineScheduler(app.store, [payment], clock=clock).fire_due()
        await runner.wait_for(await app.store.head())  # ... and handled it
        async for event in app.store.read_stream(chronik.StreamId("order", "o-1")):
            print(event.sequence, event.type, event.json())


asyncio.run(main())
