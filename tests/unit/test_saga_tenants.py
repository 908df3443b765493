"""Sagas per tenant: the same instance id in two tenants is two instances, with their own state,
commands and deadlines; the upgrade from tables without tenants rebuilds and sends nothing again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import chronik
from chronik import Command, StreamId
from chronik.commands import CommandResult
from chronik.deadlines import DEADLINE_DOMAIN, DeadlineScheduler, ManualClock, pending_deadlines
from chronik.projections import Projection, ProjectionAdmin, ProjectionRunner, Table, query
from chronik.projections.projection import ErrorPolicy
from chronik.sagas import STORAGE, Saga, SagaContext

registry = chronik.EventRegistry()


@registry.event()
class Ordered(msgspec.Struct):
    order_id: str
    amount: int


@registry.event()
class Paid(msgspec.Struct):
    order_id: str


@registry.event()
class Issued(msgspec.Struct):
    amount: int


@registry.event()
class Reminded(msgspec.Struct):
    pass


def invoice_decide(command: Command, state: dict[str, Any]) -> Any:
    if command.type == "Issue":
        return Issued(command.payload["amount"])
    return Reminded()


class Billing(msgspec.Struct):
    amount: int = 0
    reminders: int = 0


def billing(legacy: bool = False) -> Saga[Billing]:
    """The saga under test; ``legacy``: with the tables as they were before tenants (its
    projection at the version that served them)."""
    saga: Saga[Billing] = Saga("billing", state=Billing, associate="order_id")
    if legacy:
        saga.version = 2 - STORAGE  # the projection's version: 1, as before
        saga.instances = Table(
            "billing_instances",
            {"instance_id": str, "state": bytes, "ended": int},
            primary_key="instance_id",
        )
        saga.deadlines = Table(
            "billing_deadlines",
            {"instance_id": str, "name": str, "due_us": int, "payload": bytes},
            primary_key=("instance_id", "name"),
        )

    @saga.starts_with("Ordered")
    def ordered(state: Billing, event: chronik.RecordedEvent, ctx: SagaContext) -> Billing:
        amount = event.json()["amount"]
        ctx.send(
            Command(
                domain="invoice",
                aggregate_id=ctx.instance_id,
                type="Issue",
                payload={"amount": amount},
            )
        )
        ctx.schedule("remind", after=60)
        return Billing(amount)

    @saga.on("Paid")
    def paid(state: Billing, event: chronik.RecordedEvent, ctx: SagaContext) -> Billing:
        ctx.cancel("remind")
        ctx.end()
        return state

    @saga.on_deadline("remind")
    def remind(state: Billing, event: chronik.RecordedEvent, ctx: SagaContext) -> Billing:
        ctx.send(Command(domain="invoice", aggregate_id=ctx.instance_id, type="Remind"))
        return Billing(state.amount, state.reminders + 1)

    return saga


class Office:
    """An app with invoices, the billing saga's runner, a manual clock and what was sent."""

    def __init__(self, app: chronik.Chronik) -> None:
        self.app, self.store = app, app.store
        self.clock = ManualClock()
        self.sent: list[tuple[str, str, str]] = []  # (tenant, type, command id) dispatched
        self.runner: ProjectionRunner | None = None

    async def dispatch(self, command: Command) -> CommandResult:
        self.sent.append((command.tenant, command.type, command.command_id or ""))
        return await self.app.dispatch(command)

    async def run(self, saga: Saga[Billing]) -> Projection:
        if self.runner is not None:
            await self.runner.stop()
        projection = saga.projection(self.dispatch, self.clock)
        self.runner = ProjectionRunner(self.store, [projection], heartbeat=0.05)
        await self.runner.start()
        return projection

    async def settle(self) -> None:
        assert self.runner is not None
        for _ in range(3):
            head = await self.store.head()
            assert head is not None
            async with asyncio.timeout(10):
                await self.runner.wait_for(head)

    async def append(self, tenant: str, event: Any) -> None:
        stream = StreamId("order", event.order_id, tenant)
        await self.store.append(stream, [registry.to_event_data(event)])

    async def fire(self, saga: Saga[Billing]) -> int:
        scheduler = DeadlineScheduler(self.store, [saga], clock=self.clock, owner="office")
        return await scheduler.fire_due()

    async def invoice(self, tenant: str, order: str = "o1") -> list[str]:
        return [e.type async for e in self.store.read_stream(StreamId("invoice", order, tenant))]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def office(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Office]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/o.db"
    app = chronik.Chronik(store=url, registry=registry)
    app.add_decider("invoice", invoice_decide, lambda s, e: s, dict)
    async with app:
        o = Office(app)
        try:
            yield o
        finally:
            if o.runner is not None:
                await o.runner.stop()


async def test_one_instance_id_in_two_tenants_is_two_instances(office: Office) -> None:
    """Order o1 in acme and in beta: two rows, each tenant's amount, commands to each tenant's
    invoice, none to the default tenant; paying acme's ends it alone."""
    saga = billing()
    await office.run(saga)
    await office.append("acme", Ordered("o1", 10))
    await office.append("beta", Ordered("o1", 20))
    await office.settle()
    rows = await query(office.store, "billing", "billing_instances")
    state = {r["tenant"]: msgspec.json.decode(r["state"]) for r in rows}
    assert sorted(r["instance_id"] for r in rows) == ["o1", "o1"]
    assert state == {"acme": {"amount": 10, "reminders": 0}, "beta": {"amount": 20, "reminders": 0}}
    assert sorted((t, ty) for t, ty, _ in office.sent) == [("acme", "Issue"), ("beta", "Issue")]
    assert await office.invoice("acme") == ["Issued"] and await office.invoice("beta") == ["Issued"]
    assert await office.invoice("") == []
    (acme_issued,) = [e async for e in office.store.read_stream(StreamId("invoice", "o1", "acme"))]
    assert acme_issued.json() == {"amount": 10}
    await office.append("acme", Paid("o1"))
    await office.settle()
    ended = {
        r["tenant"]: r["ended"] for r in await query(office.store, "billing", "billing_instances")
    }
    assert ended == {"acme": 1, "beta": 0}


async def test_deadlines_fire_into_their_tenant(office: Office) -> None:
    """acme's and beta's o1 each arm a reminder; acme pays (cancelled): only beta's fires, into
    beta's log, reminds beta's invoice, and never fires again."""
    saga = billing()
    await office.run(saga)
    await office.append("acme", Ordered("o1", 10))
    await office.append("beta", Ordered("o1", 20))
    await office.settle()
    pending = await pending_deadlines(office.store, "beta", owner="billing")
    assert [(r["tenant"], r["instance_id"]) for r in pending] == [("beta", "o1")]
    await office.append("acme", Paid("o1"))
    await office.settle()
    office.clock.advance(61)
    assert await office.fire(saga) == 1
    await office.settle()
    fired = [e async for e in office.store.read_all() if e.stream.domain == DEADLINE_DOMAIN]
    assert [(e.stream.tenant, e.json()["instance_id"]) for e in fired] == [("beta", "o1")]
    assert await office.invoice("beta") == ["Issued", "Reminded"]
    assert await office.invoice("acme") == ["Issued"] and await office.invoice("") == []
    assert await office.fire(saga) == 0
    assert await pending_deadlines(office.store, owner="billing") == []


async def test_both_tenants_deadlines_fire_with_the_same_due_time(office: Office) -> None:
    """Two tenants' o1 armed at one recorded time (one append each, same clock): two fired
    events with distinct ids, each handled in its own tenant."""
    saga = billing()
    await office.run(saga)
    await office.append("acme", Ordered("o1", 10))
    await office.append("beta", Ordered("o1", 20))
    await office.settle()
    office.clock.advance(61)
    assert await office.fire(saga) == 2
    await office.settle()
    assert await office.invoice("acme") == ["Issued", "Reminded"]
    assert await office.invoice("beta") == ["Issued", "Reminded"]
    rows = await query(office.store, "billing", "billing_instances")
    assert {r["tenant"]: msgspec.json.decode(r["state"])["reminders"] for r in rows} == {
        "acme": 1,
        "beta": 1,
    }


async def test_the_upgrade_to_tables_per_tenant_rebuilds_and_sends_nothing_again(
    office: Office,
) -> None:
    """A deployment of the saga before tenants (one row per instance id, version 1) sent acme's
    Issue and its fired reminder's Remind; the new code builds generation 2 per tenant from the
    log, answers from the decision record (nothing dispatched again), and leaves no deadline to
    fire again."""
    old = billing(legacy=True)
    await office.run(old)
    await office.append("acme", Ordered("o1", 10))
    await office.settle()
    office.clock.advance(61)
    assert await office.fire(old) == 1
    await office.settle()
    await office.append("acme", Ordered("o2", 5))  # its reminder not due yet
    await office.settle()
    # before tenants, a fired deadline's command went to the default tenant
    assert await office.invoice("acme") == ["Issued"] and await office.invoice("") == ["Reminded"]
    before = list(office.sent)
    assert [(t, ty) for t, ty, _ in before] == [
        ("acme", "Issue"),
        ("", "Remind"),
        ("acme", "Issue"),
    ]
    new = billing()
    await office.run(new)
    admin = ProjectionAdmin(office.store)
    async with asyncio.timeout(10):
        while True:
            status = await admin.status("billing")
            if status.generation == 2 and status.building is None:
                break
            await asyncio.sleep(0.02)
    await office.settle()
    assert office.sent == before  # nothing dispatched again
    rows = await query(office.store, "billing", "billing_instances")
    assert sorted((r["tenant"], r["instance_id"]) for r in rows) == [("acme", "o1"), ("acme", "o2")]
    pending = await pending_deadlines(office.store, owner="billing")
    assert [(r["tenant"], r["instance_id"]) for r in pending] == [("acme", "o2")]
    assert await office.fire(new) == 1  # o2's (due: the clock is ahead), o1's not again
    await office.settle()
    assert await office.fire(new) == 0
    fired = [e async for e in office.store.read_all() if e.stream.domain == DEADLINE_DOMAIN]
    assert [(e.stream.tenant, e.json()["instance_id"]) for e in fired] == [
        ("", "o1"),
        ("acme", "o2"),
    ]
    assert await office.invoice("acme", "o2") == ["Issued", "Reminded"]
    assert await office.invoice("acme") == ["Issued"] and await office.invoice("") == ["Reminded"]
    assert [(t, ty) for t, ty, _ in office.sent[len(before) :]] == [("acme", "Remind")]


async def test_a_command_to_another_tenant_is_refused(office: Office) -> None:
    """An acme instance that names beta in a command sends nothing (the handler fails, here
    skipped); one naming its own tenant, or none, sends to acme."""
    saga: Saga[Billing] = Saga(
        "leaky",
        state=Billing,
        associate="order_id",
        policy=ErrorPolicy(retries=0, then="skip"),
    )

    @saga.starts_with("Ordered")
    def ordered(state: Billing, event: chronik.RecordedEvent, ctx: SagaContext) -> Billing:
        to = "beta" if ctx.instance_id == "bad" else ctx.instance_id.removeprefix("to-")
        command = Command(domain="invoice", aggregate_id=ctx.instance_id, type="Remind")
        ctx.send(msgspec.structs.replace(command, tenant="" if to == "none" else to))
        return state

    await office.run(saga)
    for order in ("bad", "to-acme", "to-none"):
        await office.append("acme", Ordered(order, 1))
    await office.settle()
    assert sorted((t, ty) for t, ty, _ in office.sent) == [("acme", "Remind")] * 2
    assert await office.invoice("beta", "bad") == [] and await office.invoice("acme", "bad") == []
    rows = await query(office.store, "leaky", "leaky_instances")
    assert sorted(r["instance_id"] for r in rows) == ["to-acme", "to-none"]
