"""Saga and projection fixtures: production handlers over a memory store, a manual clock."""

from __future__ import annotations

import msgspec
import pytest

import chronik
from chronik import Command, EventData, StreamId
from chronik.projections import Projection, ReadModel, Table
from chronik.sagas import Saga, SagaContext
from chronik.testing import projection_fixture, saga_fixture

registry = chronik.EventRegistry()


@registry.event()
class OrderPlaced(msgspec.Struct):
    order_id: str
    sku: str = "book"


@registry.event()
class PaymentReceived(msgspec.Struct):
    order_id: str


class Payment(msgspec.Struct):
    sku: str = ""
    paid: bool = False


payment: Saga[Payment] = Saga("payment", state=Payment, associate="order_id")
ORDER = StreamId("order", "o-1")


def cancel(order_id: str, reason: str) -> Command:
    return Command(domain="order", aggregate_id=order_id, type="Cancel", payload={"reason": reason})


@payment.starts_with("OrderPlaced")
def _placed(state: Payment, event: chronik.RecordedEvent, ctx: SagaContext) -> Payment:
    placed = registry.decode(event)
    if placed.sku == "bomb":
        raise RuntimeError("cannot ship a bomb")
    ctx.send(Command(domain="stock", aggregate_id=placed.sku, type="Reserve",
                     payload={"order_id": placed.order_id}))  # fmt: skip
    ctx.schedule("unpaid", after=15 * 60)
    return Payment(sku=placed.sku)


@payment.on("PaymentReceived")
def _paid(state: Payment, event: chronik.RecordedEvent, ctx: SagaContext) -> Payment:
    ctx.cancel("unpaid")
    ctx.end()
    return Payment(state.sku, paid=True)


@payment.on_deadline("unpaid")
def _unpaid(state: Payment, event: chronik.RecordedEvent, ctx: SagaContext) -> Payment:
    ctx.send(cancel(ctx.instance_id, "not paid in time"))
    ctx.end()
    return state


@payment.on_rejected
def _rejected(state: Payment, command: Command, reason: str, ctx: SagaContext) -> Payment:
    ctx.send(cancel(ctx.instance_id, reason))
    ctx.cancel("unpaid")
    return state


def test_a_deadline_fires_when_the_manual_clock_passes_it() -> None:
    """when schedules, after(...) fires only once due: the cancel command, the saga ended."""
    fixture = saga_fixture(payment, registry=registry)
    fixture.given().when(OrderPlaced("o-1"), stream=ORDER).then_scheduled("unpaid", "o-1")
    fixture.then_commands(
        [Command(domain="stock", aggregate_id="book", type="Reserve", payload={"order_id": "o-1"})]
    )
    fixture.after(14 * 60).then_no_commands().then_scheduled("unpaid")
    fixture.after(60).then_commands([cancel("o-1", "not paid in time")]).then_ended()
    assert fixture.deadlines() == {}


def test_payment_cancels_the_deadline_and_ends_the_instance() -> None:
    """A later event cancels the deadline (then_cancelled), which then never fires."""
    fixture = saga_fixture(payment, registry=registry).given(OrderPlaced("o-1"), stream=ORDER)
    fixture.when(PaymentReceived("o-1"), stream=ORDER).then_no_commands()
    fixture.then_cancelled("unpaid").then_ended("o-1")
    assert fixture.state("o-1") == Payment("book", paid=True)
    fixture.after(3600).then_no_commands()


def test_a_rejected_command_runs_on_rejected() -> None:
    """rejecting(...) makes the bus refuse a command type: on_rejected compensates."""
    fixture = saga_fixture(payment, registry=registry).rejecting("Reserve", "out of stock")
    fixture.when(EventData("OrderPlaced", {"order_id": "o-2"}), stream=("order", "o-2"))
    fixture.then_commands(
        [
            Command(
                domain="stock", aggregate_id="book", type="Reserve", payload={"order_id": "o-2"}
            ),
            cancel("o-2", "out of stock"),
        ]
    )
    with pytest.raises(AssertionError, match="unpaid"):
        fixture.then_scheduled("unpaid")


def test_failed_expectations_and_handler_errors_are_assertion_errors() -> None:
    """A wrong expectation fails with both sides shown; a handler that raises fails the step."""
    fixture = saga_fixture(payment, registry=registry).when(OrderPlaced("o-1"), stream=ORDER)
    with pytest.raises(AssertionError, match="expected commands"):
        fixture.then_no_commands()
    with pytest.raises(AssertionError, match="running"):
        fixture.then_ended()
    with pytest.raises(AssertionError, match="cancelled"):
        fixture.then_cancelled("unpaid")
    with pytest.raises(AssertionError, match="cannot ship a bomb"):
        saga_fixture(payment, registry=registry).when(OrderPlaced("o-9", "bomb"), stream=ORDER)


def orders() -> Projection:
    """Placed orders, marked paid when paid."""
    table = Table("orders", {"id": str, "sku": str, "paid": int}, primary_key="id")
    projection = Projection("orders", tables=[table])

    @projection.on("OrderPlaced")
    def _placed(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        placed = registry.decode(event)
        rm.upsert("orders", id=placed.order_id, sku=placed.sku, paid=0)

    @projection.on("PaymentReceived")
    async def _paid(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("orders", id=event.json()["order_id"])
        if row is None:
            raise LookupError("payment for an unknown order")
        rm.upsert("orders", **{**row, "paid": 1})

    return projection


def test_a_projection_fixture_checks_the_rows_written() -> None:
    """Events of several streams, typed or raw, go through the real handlers into rows."""
    fixture = projection_fixture(orders(), registry=registry)
    fixture.given(OrderPlaced("o-1"), PaymentReceived("o-1"), stream=ORDER)
    fixture.given(
        EventData("OrderPlaced", {"order_id": "o-2", "sku": "pen"}), stream=("order", "o-2")
    )
    fixture.then_rows(
        "orders",
        [{"id": "o-2", "sku": "pen", "paid": 0}, {"id": "o-1", "sku": "book", "paid": 1}],
    )
    with pytest.raises(AssertionError, match="expected rows"):
        fixture.then_rows("orders", [])


def test_a_projection_handler_error_fails_the_step() -> None:
    """A handler that raises is reported at once, not retried in the background."""
    fixture = projection_fixture(orders(), registry=registry)
    with pytest.raises(AssertionError, match="payment for an unknown order"):
        fixture.given(PaymentReceived("o-1"), stream=ORDER)


def test_typed_events_need_a_registry() -> None:
    """A registered instance given without registry= is a ValidationError naming the fix."""
    with pytest.raises(chronik.ValidationError, match="registry="):
        projection_fixture(orders()).given(OrderPlaced("o-1"))


async def test_fixtures_work_from_async_tests_too() -> None:
    """Called inside a running event loop, a fixture still runs its steps."""
    fixture = saga_fixture(payment, registry=registry).when(OrderPlaced("o-1"), stream=ORDER)
    fixture.after(16 * 60).then_commands([cancel("o-1", "not paid in time")])
