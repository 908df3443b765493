import msgspec

import chronik
from chronik.projections import Projection, ReadModel, Table
from chronik.sagas import Saga, SagaContext
from chronik.testing import projection_fixture, saga_fixture

registry = chronik.EventRegistry()


@registry.event()
class OrderPlaced(msgspec.Struct):
    order_id: str


class Payment(msgspec.Struct):
    pass


payment: Saga[Payment] = Saga("payment", state=Payment, associate="order_id")


@payment.starts_with("OrderPlaced")
def placed(state: Payment, event: chronik.RecordedEvent, ctx: SagaContext) -> Payment:
    ctx.schedule("unpaid", after=15 * 60)
    return state


@payment.on_deadline("unpaid")
def unpaid(state: Payment, event: chronik.RecordedEvent, ctx: SagaContext) -> Payment:
    ctx.send(chronik.Command(domain="order", aggregate_id=ctx.instance_id, type="Cancel"))
    ctx.end()
    return state


order = chronik.StreamId("order", "o-1")
# the saga's real handlers over a memory store; after(s) moves a manual clock
saga_fixture(payment, registry=registry).given().when(
    OrderPlaced("o-1"), stream=order
).then_scheduled("unpaid").then_no_commands().after(16 * 60).then_commands(
    [chronik.Command(domain="order", aggregate_id="o-1", type="Cancel")]
).then_ended()

placed_orders = Projection("placed", tables=[Table("placed", {"id": str}, primary_key="id")])


@placed_orders.on("OrderPlaced")
def on_placed(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    rm.upsert("placed", id=event.json()["order_id"])


projection_fixture(placed_orders, registry=registry).given(
    OrderPlaced("o-1"), stream=order
).then_rows("placed", [{"id": "o-1"}])
print("saga and projection fixtures passed")
