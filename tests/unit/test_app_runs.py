"""The embedded app runs what it was given inside ``async with``: projections, sagas, the
deadline scheduler, the outbox dispatcher; one switch per part, all stopped on exit."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

import chronik
from chronik import Command
from chronik.deadlines import ManualClock
from chronik.outbox import OutboxAdmin
from chronik.projections import Projection, ReadModel, Table, query
from chronik.sagas import Saga, SagaContext
from chronik.transports import open_transport
from chronik.transports.message import Delivery, Message

registry = chronik.EventRegistry()


@registry.event()
class OrderPlaced(msgspec.Struct):
    order_id: str


@registry.event()
class OrderCancelled(msgspec.Struct):
    reason: str


def decide(command: Command, state: dict[str, Any]) -> Any:
    if command.type == "Place":
        return OrderPlaced(command.aggregate_id)
    return OrderCancelled(command.payload["reason"])


def evolve(state: dict[str, Any], event: Any) -> dict[str, Any]:
    return {"status": "placed" if isinstance(event, OrderPlaced) else "cancelled"}


class Payment(msgspec.Struct):
    paid: bool = False


payment: Saga[Payment] = Saga("payment", state=Payment, associate="order_id")


@payment.starts_with("OrderPlaced")
def _placed(state: Payment, event: chronik.RecordedEvent, ctx: SagaContext) -> Payment:
    ctx.schedule("unpaid", after=15 * 60)
    return state


@payment.on_deadline("unpaid")
def _unpaid(state: Payment, event: chronik.RecordedEvent, ctx: SagaContext) -> Payment:
    ctx.send(Command(domain="order", aggregate_id=ctx.instance_id, type="Cancel",
                     payload={"reason": "not paid in time"}))  # fmt: skip
    ctx.end()
    return state


def placed_orders() -> Projection:
    """A read model of placed orders."""
    projection = Projection("placed", tables=[Table("placed", {"id": str}, primary_key="id")])

    @projection.on("OrderPlaced")
    def _on(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        rm.upsert("placed", id=event.stream.aggregate_id)

    return projection


def make_app(**options: Any) -> chronik.Chronik:
    app = chronik.Chronik("memory://", registry=registry, **options)
    app.add_decider("order", decide, evolve, dict)
    return app


PLACE = Command(domain="order", aggregate_id="o-1", type="Place")


async def status(app: chronik.Chronik) -> str | None:
    state: dict[str, Any] = await app.load("order", "o-1")
    return state.get("status")


async def until_cancelled(app: chronik.Chronik, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while await status(app) != "cancelled":
            await asyncio.sleep(0.02)


async def test_a_saga_added_to_the_app_fires_its_deadline_by_the_apps_clock() -> None:
    """add_saga + a ManualClock: advancing the clock cancels the order, with no runner or
    scheduler code of the test's own."""
    clock = ManualClock()
    app = make_app(clock=clock)
    app.add_saga(payment)
    async with app:
        placed = await app.dispatch(PLACE)
        async with asyncio.timeout(5):
            await app.wait_for(placed.position)  # the saga recorded its deadline
        clock.advance(14 * 60)
        await asyncio.sleep(0.6)  # a scheduler round: not due yet
        assert await status(app) == "placed"
        clock.advance(2 * 60)
        await until_cancelled(app)
        assert {"deadline scheduler", "projection payment"} <= set(app.health.tasks)


class Invoice(chronik.Aggregate):
    """An invoice that expires unless paid within an hour."""

    domain = "invoice"
    status: str = "new"

    @chronik.command("Issue")
    def issue(self, payload: dict[str, Any]) -> None:
        self.emit(chronik.EventData("invoice.issued", {}))
        self.schedule("expiry", after=3600, command="Expire")

    @chronik.command("Expire")
    def expire(self, payload: dict[str, Any]) -> None:
        self.emit(chronik.EventData("invoice.expired", {}))

    @chronik.apply
    def _recorded(self, event: chronik.RecordedEvent) -> None:
        self.status = event.type.removeprefix("invoice.")


async def test_aggregate_deadlines_fire_with_run_deadlines_and_no_saga() -> None:
    """run_deadlines=True runs the chronik_deadlines projection and the scheduler for an app
    whose aggregate schedules a deadline."""
    clock = ManualClock()
    app = chronik.Chronik("memory://", run_deadlines=True, clock=clock)
    app.add_aggregate(Invoice)
    async with app:
        issued = await app.dispatch(Command(domain="invoice", aggregate_id="i1", type="Issue"))
        async with asyncio.timeout(5):
            await app.wait_for(issued.position)
        clock.advance(3601)
        async with asyncio.timeout(5):
            while (await app.load("invoice", "i1")).status != "expired":
                await asyncio.sleep(0.02)


async def test_the_outbox_dispatches_when_a_transport_is_given() -> None:
    """With outbox_transport, messages an outbox rule recorded reach the transport."""
    got: list[Delivery] = []

    async def collect(delivery: Delivery) -> None:
        got.append(delivery)

    async with open_transport("memory://") as transport:
        await transport.subscribe("order.placed", "mail", collect)
        app = make_app(outbox_transport=transport)
        app.add_outbox(
            lambda event, data, stream: Message(topic="order.placed", id=data.event_id, body=b"{}")
        )
        async with app:
            placed = await app.dispatch(PLACE)
            async with asyncio.timeout(5):
                while not got:
                    await asyncio.sleep(0.02)
        assert [d.message.id for d in got] == [placed.events[0].event_id]
        assert not transport.closed  # a Transport given stays its owner's to close


async def test_an_outbox_transport_url_is_opened_and_closed_by_the_app() -> None:
    """outbox_transport as a URL: the app opens the transport, publishes, closes it on exit."""
    app = make_app(outbox_transport="memory://app-outbox")
    app.add_outbox(lambda event, data, stream: Message(topic="order.placed", body=b"{}"))
    async with app:
        assert app.outbox is not None
        transport = app.outbox.transport
        await app.dispatch(PLACE)
        async with asyncio.timeout(5):
            while app.outbox.sent < 1:
                await asyncio.sleep(0.02)
    assert transport.closed and app.outbox is None


async def test_leaving_async_with_stops_everything_within_a_bound() -> None:
    """On exit every task the app started has ended, promptly; a handler that never returns
    is cancelled after close's grace."""
    stuck = Projection("stuck")

    @stuck.on("OrderPlaced")
    async def _hang(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        await asyncio.sleep(3600)

    app = make_app(outbox_transport="memory://", run_deadlines=True)
    app.add_saga(payment)
    app.add_projection(stuck)
    await app.open()
    await app.dispatch(PLACE)
    await asyncio.sleep(0.2)
    tasks = [info.task for info in app.health.tasks.values() if info.task is not None]
    assert len(tasks) >= 4  # projections, saga, scheduler, outbox
    started = time.monotonic()
    await app.close(grace=0.5)
    assert time.monotonic() - started < 3
    assert all(task.done() for task in tasks)
    assert app.runner is None and app.scheduler is None and app.outbox is None


async def test_each_switch_off_means_that_part_does_not_run() -> None:
    """run_projections=False, run_deadlines=False and no outbox_transport: nothing runs, the
    outbox message stays pending and no deadline fires."""
    clock = ManualClock()
    app = make_app(run_projections=False, run_deadlines=False, clock=clock)
    app.add_saga(payment)
    app.add_projection(placed_orders())
    app.add_outbox(lambda event, data, stream: Message(topic="order.placed", body=b"{}"))
    async with app:
        await app.dispatch(PLACE)
        clock.advance(3600)
        await asyncio.sleep(0.7)
        assert app.runner is None and app.scheduler is None and app.outbox is None
        assert set(app.health.tasks) == set()
        assert await status(app) == "placed"
        assert [r["state"] for r in await OutboxAdmin(app.store).messages()] == ["pending"]


async def test_deadlines_run_by_default_only_with_a_saga() -> None:
    """Without a saga (and run_deadlines unset) no scheduler runs; projections still do."""
    app = make_app()
    app.add_projection(placed_orders())
    async with app:
        placed = await app.dispatch(PLACE)
        async with asyncio.timeout(5):
            await app.wait_for(placed.position)
        assert await query(app.store, "placed", "placed") == [{"id": "o-1"}]
        assert app.scheduler is None and "deadline scheduler" not in app.health.tasks
