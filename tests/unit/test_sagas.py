"""Sagas: state per instance, compensation, deadlines that fire once (controllable clock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

import chronik
from chronik import Command
from chronik.deadlines import AGGREGATE_DEADLINES, DeadlineScheduler, ManualClock, lease_name
from chronik.projections import ProjectionRunner, query
from chronik.sagas import Saga, SagaContext
from chronik.store import leases

registry = chronik.EventRegistry()


@registry.event()
class OrderPlaced(msgspec.Struct):
    order_id: str
    sku: str


@registry.event()
class OrderPaid(msgspec.Struct):
    order_id: str


@registry.event()
class OrderCancelled(msgspec.Struct):
    order_id: str
    reason: str


@registry.event()
class PaymentReceived(msgspec.Struct):
    order_id: str


@registry.event()
class Reserved(msgspec.Struct):
    order_id: str


def order_decide(command: Command, state: dict[str, Any]) -> Any:
    p = command.payload
    if command.type == "Place":
        return OrderPlaced(command.aggregate_id, p["sku"])
    if state.get("status") == "cancelled":
        raise chronik.CommandRejected("Order is cancelled")
    if command.type == "MarkPaid":
        return OrderPaid(command.aggregate_id)
    if state.get("status") == "paid":
        raise chronik.CommandRejected("Order is paid")
    return OrderCancelled(command.aggregate_id, p["reason"])


def order_evolve(state: dict[str, Any], event: Any) -> dict[str, Any]:
    status = {OrderPlaced: "placed", OrderPaid: "paid", OrderCancelled: "cancelled"}
    return {"status": status[type(event)]}


def inventory_decide(command: Command, state: dict[str, Any]) -> Any:
    if command.aggregate_id == "sold-out":
        raise chronik.CommandRejected("Out of stock")
    return Reserved(command.payload["order_id"])


class Checkout(msgspec.Struct):
    sku: str = ""
    paid: bool = False


checkout: Saga[Checkout] = Saga("checkout", state=Checkout, associate="order_id")


@checkout.starts_with("OrderPlaced")
def _placed(state: Checkout, event: chronik.RecordedEvent, ctx: SagaContext) -> Checkout:
    placed = registry.decode(event)
    ctx.send(
        Command(
            domain="inventory",
            aggregate_id=placed.sku,
            type="Reserve",
            payload={"order_id": placed.order_id},
        )
    )
    ctx.schedule("payment_due", after=900, payload={"why": "unpaid"})
    return Checkout(sku=placed.sku)


@checkout.on("PaymentReceived")
def _paid(state: Checkout, event: chronik.RecordedEvent, ctx: SagaContext) -> Checkout:
    ctx.cancel("payment_due")
    ctx.send(Command(domain="order", aggregate_id=ctx.instance_id, type="MarkPaid"))
    ctx.end()
    return Checkout(state.sku, paid=True)


@checkout.on_deadline("payment_due")
def _expired(state: Checkout, event: chronik.RecordedEvent, ctx: SagaContext) -> Checkout:
    ctx.send(
        Command(
            domain="order",
            aggregate_id=ctx.instance_id,
            type="Cancel",
            payload={"reason": "payment timeout"},
        )
    )
    ctx.end()
    return state


@checkout.on_rejected
def _compensate(state: Checkout, command: Command, reason: str, ctx: SagaContext) -> Checkout:
    ctx.send(
        Command(
            domain="order", aggregate_id=ctx.instance_id, type="Cancel", payload={"reason": reason}
        )
    )
    ctx.cancel("payment_due")
    ctx.end()
    return state


class Shop:
    def __init__(self, app: chronik.Chronik, clock: ManualClock, runner: ProjectionRunner) -> None:
        self.app, self.clock, self.runner = app, clock, runner

    async def place(self, order: str, sku: str = "book") -> None:
        await self.app.dispatch(
            Command(domain="order", aggregate_id=order, type="Place", payload={"sku": sku})
        )

    async def pay(self, order: str) -> None:
        await self.app.store.append(
            chronik.StreamId("payment", order), [registry.to_event_data(PaymentReceived(order))]
        )

    async def settle(self) -> None:
        head = await self.app.store.head()
        assert head is not None
        async with asyncio.timeout(10):
            await self.runner.wait_for(head)

    async def status(self, order: str) -> str:
        return str((await self.app.load("order", order)).get("status"))


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    app = chronik.Chronik(store="memory://", registry=registry)
    app.add_decider("order", order_decide, order_evolve, dict)
    app.add_decider("inventory", inventory_decide, lambda s, e: s, dict)
    clock = ManualClock()
    async with app, ProjectionRunner(app.store, [checkout.projection(app.dispatch, clock)]) as r:
        yield Shop(app, clock, r)


async def test_a_paid_order_ends_the_saga_and_cancels_its_deadline(shop: Shop) -> None:
    """Placed -> reserve + deadline; paid -> deadline cancelled, order marked paid, ended."""
    await shop.place("o1")
    await shop.pay("o1")
    await shop.settle()
    await shop.settle()  # the commands the saga sent, handled in turn
    assert await shop.status("o1") == "paid"
    instances = await query(shop.app.store, "checkout", "checkout_instances")
    assert [(r["instance_id"], r["ended"]) for r in instances] == [("o1", 1)]
    assert await query(shop.app.store, "checkout", "checkout_deadlines") == []
    reserved = [e async for e in shop.app.store.read_stream(chronik.StreamId("inventory", "book"))]
    assert reserved[0].metadata.causation_id is not None


async def test_a_due_deadline_fires_once(shop: Shop) -> None:
    """After the clock passes it, the deadline cancels the order: once, with two schedulers."""
    await shop.place("o2")
    await shop.settle()
    one = DeadlineScheduler(shop.app.store, [checkout], clock=shop.clock, owner="one")
    two = DeadlineScheduler(shop.app.store, [checkout], clock=shop.clock, owner="two")
    assert await one.fire_due() == 0  # not due yet
    shop.clock.advance(901)
    assert await two.fire_due() == 0  # "one" holds the lease
    assert await one.fire_due() == 1
    assert await one.fire_due() == 1  # again before the saga handled it: the same event
    await shop.settle()
    fired = [
        e
        async for e in shop.app.store.read_stream(chronik.StreamId("chronik.deadlines", "checkout"))
    ]
    assert len(fired) == 1
    assert await shop.status("o2") == "cancelled"
    assert await one.fire_due() == 0  # handled: gone


async def test_a_scheduler_without_the_saga_never_holds_back_its_deadlines(shop: Shop) -> None:
    """A node that runs no saga (only aggregate deadlines) takes no lease on the saga's table."""
    await shop.place("o5")
    await shop.settle()
    shop.clock.advance(901)
    bare = DeadlineScheduler(shop.app.store, [], clock=shop.clock, owner="bare")
    full = DeadlineScheduler(shop.app.store, [checkout], clock=shop.clock, owner="full")
    assert await bare.fire_due() == 0  # first: it holds the aggregates' lease only
    assert await full.fire_due() == 1  # the saga's deadline fires all the same
    holders = {lease.name: lease.owner for lease in await leases.holders(shop.app.store)}
    assert holders[lease_name("checkout")] == "full"
    assert holders[lease_name(AGGREGATE_DEADLINES)] == "bare"
    assert (bare.holding, full.holding) == ((AGGREGATE_DEADLINES,), ("checkout",))


async def test_a_cancelled_deadline_never_fires(shop: Shop) -> None:
    """Paying in time cancels the deadline; passing its time fires nothing."""
    await shop.place("o3")
    await shop.pay("o3")
    await shop.settle()
    shop.clock.advance(3600)
    assert await DeadlineScheduler(shop.app.store, [checkout], clock=shop.clock).fire_due() == 0
    await shop.settle()
    assert await shop.status("o3") == "paid"


async def test_a_rejected_step_is_compensated(shop: Shop) -> None:
    """When the reservation is rejected, the saga cancels the order with the reason."""
    await shop.place("o4", sku="sold-out")
    await shop.settle()
    await shop.settle()
    assert await shop.status("o4") == "cancelled"
    (cancelled,) = [e async for e in shop.app.store.read_stream(chronik.StreamId("order", "o4"))][
        1:
    ]
    assert cancelled.json()["reason"] == "Out of stock"


async def test_overdue_deadlines_fire_when_a_scheduler_starts(shop: Shop) -> None:
    """A deadline that came due while no scheduler ran fires as soon as one starts."""
    await shop.place("o5")
    await shop.settle()
    shop.clock.advance(10_000)
    scheduler = DeadlineScheduler(shop.app.store, [checkout], clock=shop.clock, poll_interval=0.01)
    await scheduler.start()
    try:
        async with asyncio.timeout(10):
            while await shop.status("o5") != "cancelled":
                await asyncio.sleep(0.01)
    finally:
        await scheduler.stop()


@registry.event()
class Issued(msgspec.Struct):
    pass


@registry.event()
class Settled(msgspec.Struct):
    pass


@registry.event()
class Expired(msgspec.Struct):
    why: str


class Invoice(chronik.Aggregate):
    """An invoice that cancels itself if not paid in time."""

    domain = "invoice"
    status: str = ""

    @chronik.command("Issue")
    def issue(self, payload: dict[str, Any]) -> None:
        self.emit(Issued())
        self.schedule("unpaid", after=3600, command="Expire", payload={"why": "unpaid"})

    @chronik.command("Pay")
    def pay(self, payload: dict[str, Any]) -> None:
        self.cancel_deadline("unpaid")
        self.emit(Settled())

    @chronik.command("Expire")
    def expire(self, payload: dict[str, Any]) -> None:
        self.require(self.status == "issued", "Invoice is settled")
        self.emit(Expired(payload["why"]))

    @chronik.apply
    def _issued(self, event: Issued) -> None:
        self.status = "issued"

    @chronik.apply
    def _settled(self, event: Settled) -> None:
        self.status = "settled"

    @chronik.apply
    def _expired(self, event: Expired) -> None:
        self.status = "expired"


async def test_aggregate_deadlines_fire_once_unless_cancelled() -> None:
    """An aggregate's deadline sends it its command when due, once; a cancelled one never."""
    from chronik.deadlines import aggregate_deadlines

    app = chronik.Chronik(store="memory://", registry=registry)
    app.add_aggregate(Invoice)
    clock = ManualClock()
    async with app, ProjectionRunner(app.store, [aggregate_deadlines(app.dispatch)]) as runner:
        for invoice in ("i1", "i2"):
            await app.dispatch(Command(domain="invoice", aggregate_id=invoice, type="Issue"))
        await app.dispatch(Command(domain="invoice", aggregate_id="i2", type="Pay"))
        scheduler = DeadlineScheduler(app.store, clock=clock)

        async def settle() -> None:
            head = await app.store.head()
            assert head is not None
            async with asyncio.timeout(10):
                await runner.wait_for(head)

        await settle()
        assert await scheduler.fire_due() == 0
        clock.advance(3601)
        assert await scheduler.fire_due() == 1  # i2's was cancelled
        assert await scheduler.fire_due() == 1  # not handled yet: the same event again
        await settle()
        assert await scheduler.fire_due() == 0
        assert (await app.load("invoice", "i1")).status == "expired"
        assert (await app.load("invoice", "i2")).status == "settled"
        i1 = [e.type async for e in app.store.read_stream(chronik.StreamId("invoice", "i1"))]
        assert i1 == ["Issued", "chronik.DeadlineScheduled", "Expired"]
