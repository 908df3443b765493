"""``app.on_committed``: handlers run after a command's unit of work committed, off the
caller's path, never for a command that was rejected, raised or rolled back (chronik.emitter)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import pytest

import chronik
from chronik import Command, RecordedEvent
from chronik.dcb import Query
from chronik.emitter import TASK_NAME
from chronik.reactions import reaction
from chronik.sagas import Saga, SagaContext
from chronik.transports.message import Message

registry = chronik.EventRegistry()


@registry.event("order.placed")
class OrderPlaced(msgspec.Struct):
    order_id: str


@registry.event("order.shipped")
class OrderShipped(msgspec.Struct):
    order_id: str


@registry.event("mail.sent")
class MailSent(msgspec.Struct):
    order_id: str


def decide(command: Command, state: dict[str, Any]) -> Any:
    if command.type == "Place":
        if state.get("placed"):
            raise chronik.CommandRejected("already placed")
        return OrderPlaced(command.aggregate_id)
    if command.type == "PlaceAndShip":
        return [OrderPlaced(command.aggregate_id), OrderShipped(command.aggregate_id)]
    if command.type == "Ship":
        return OrderShipped(command.aggregate_id)
    if command.type == "Crash":
        raise KeyError("a bug in decide")
    return None


def evolve(state: dict[str, Any], event: Any) -> dict[str, Any]:
    return {**state, "placed": True}


def mail_decide(command: Command, state: dict[str, Any]) -> Any:
    return MailSent(command.aggregate_id)


def make_app(**options: Any) -> chronik.Chronik:
    app = chronik.Chronik("memory://", registry=registry, **options)
    app.add_decider("order", decide, evolve, dict)
    app.add_decider("mail", mail_decide, evolve, dict)
    return app


def order(kind: str, aggregate_id: str = "o-1", **fields: Any) -> Command:
    return Command(domain="order", aggregate_id=aggregate_id, type=kind, **fields)


async def until(condition: Any, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_handler_runs_after_commit_and_sees_the_event_in_the_store() -> None:
    """The handler gets the committed event after dispatch returned; the store has it then."""
    app = make_app()
    seen: list[tuple[RecordedEvent, RecordedEvent | None]] = []

    async def on_placed(event: RecordedEvent) -> None:
        seen.append((event, await app.store.get_event(event.event_id)))

    registered = app.on_committed("order.placed", on_placed)
    async with app:
        result = await app.dispatch(order("Place"))
        assert seen == []  # off the caller's path: nothing ran before dispatch returned
        await until(lambda: len(seen) == 1)
    event, stored = seen[0]
    assert event == result.events[0]
    assert stored is not None and stored.event_id == event.event_id
    assert registered.handler is on_placed and registered.types == frozenset({"order.placed"})
    assert app.bus.emitter.emitted == 1


async def test_nothing_is_emitted_for_a_command_that_failed_or_stored_nothing() -> None:
    """Rejected, conflicting, crashing, rolled-back, duplicate and empty commands emit nothing."""
    app = make_app()
    seen: list[str] = []
    app.on_committed(lambda e: True, lambda e: seen.append(e.type))

    def refuse_mail(event: Any, data: Any, stream: chronik.StreamId) -> Any:
        if stream.domain == "mail":
            raise RuntimeError("the outbox rule fails: the unit rolls back")
        return None

    app.add_outbox(refuse_mail)
    async with app:
        await app.dispatch(order("Place", command_id="c-1"))
        await until(lambda: seen == ["order.placed"])
        with pytest.raises(chronik.CommandRejected):
            await app.dispatch(order("Place"))
        with pytest.raises(chronik.WrongExpectedVersion):
            await app.dispatch(order("Ship", expected_sequence=5))
        with pytest.raises(chronik.HandlerError):
            await app.dispatch(order("Crash"))
        with pytest.raises(RuntimeError):
            await app.dispatch(Command(domain="mail", aggregate_id="m-1", type="Send"))
        assert [e async for e in app.store.read_all()][-1].type == "order.placed"  # rolled back
        again = await app.dispatch(order("Place", command_id="c-1"))
        assert again.duplicate
        assert (await app.dispatch(order("Nothing"))).events == []
        await app.dispatch(order("Ship"))  # a marker: everything before it was handled
        await until(lambda: len(seen) == 2)
    assert seen == ["order.placed", "order.shipped"]


async def test_events_reach_handlers_in_stored_order_and_by_type_or_predicate() -> None:
    """Type names, collections of them and predicates select events; order is the store's."""
    app = make_app()
    by_type: list[str] = []
    by_types: list[str] = []
    by_predicate: list[str] = []
    vip_events: list[RecordedEvent] = []
    app.on_committed("order.shipped", lambda e: by_type.append(e.stream.aggregate_id))
    app.on_committed(["order.placed", "order.shipped"], lambda e: by_types.append(e.type))

    @app.on_committed(lambda e: e.stream.aggregate_id.startswith("vip"))
    async def vip(event: RecordedEvent) -> None:
        by_predicate.append(f"{event.stream.aggregate_id}:{event.sequence}")
        vip_events.append(event)

    async with app:
        await app.dispatch(order("PlaceAndShip", "vip-1"))
        await app.dispatch(order("Place", "o-2"))
        await app.dispatch(order("Ship", "vip-1"))
        await asyncio.gather(*(app.dispatch(order("Ship", "o-3")) for _ in range(5)))
        await until(lambda: len(by_types) == 9)
    assert by_types == ["order.placed", "order.shipped", "order.placed"] + ["order.shipped"] * 6
    assert by_type == ["vip-1", "vip-1", "o-3", "o-3", "o-3", "o-3", "o-3"]
    assert by_predicate == ["vip-1:0", "vip-1:1", "vip-1:2"]
    await vip(vip_events[0])  # type: ignore[misc]  # the registration stays callable
    assert by_predicate[-1] == "vip-1:0"


async def test_a_raising_handler_breaks_neither_the_others_nor_dispatch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler that raises is logged with the event id; later handlers and events go on."""
    app = make_app()
    seen: list[str] = []

    def broken(event: RecordedEvent) -> None:
        raise ValueError("the handler fails")

    async def predicate_fails(event: RecordedEvent) -> None:
        seen.append("never")

    app.on_committed("order.placed", broken)
    app.on_committed(lambda e: 1 / 0 == 0, predicate_fails)
    app.on_committed("order.placed", lambda e: seen.append(e.stream.aggregate_id))
    with caplog.at_level(logging.ERROR, logger="chronik.emitter"):
        async with app:
            first = await app.dispatch(order("Place", "a"))
            await app.dispatch(order("Place", "b"))
            await until(lambda: seen == ["a", "b"])
    assert app.bus.emitter.failed == 4
    assert any(first.events[0].event_id in r.getMessage() for r in caplog.records)
    assert "ValueError" in caplog.text and "ZeroDivisionError" in caplog.text


async def test_removed_handlers_stop_and_no_handler_means_nothing_queued() -> None:
    """remove() unregisters; with no handler the bus queues nothing at all."""
    app = make_app()
    seen: list[str] = []
    registered = app.on_committed("order.placed", lambda e: seen.append(e.type))
    async with app:
        await app.dispatch(order("Place", "a"))
        await until(lambda: seen == ["order.placed"])
        registered.remove()
        registered.remove()  # idempotent
        assert app.bus.emitter.handlers == ()
        await app.dispatch(order("Place", "b"))
        assert app.bus.emitter.pending == 0
        await asyncio.sleep(0.05)
    assert seen == ["order.placed"] and app.bus.emitter.emitted == 1


async def test_close_drains_within_the_grace_and_drops_the_rest() -> None:
    """close(grace) hands queued events to slow handlers until the grace runs out."""
    app = make_app()
    seen: list[str] = []

    async def slow(event: RecordedEvent) -> None:
        await asyncio.sleep(0.05)
        seen.append(event.stream.aggregate_id)

    app.on_committed("order.placed", slow)
    await app.open()
    for i in range(3):
        await app.dispatch(order("Place", f"o-{i}"))
    await app.close(grace=5)
    assert seen == ["o-0", "o-1", "o-2"]

    app = make_app()
    app.on_committed("order.placed", slow)
    await app.open()
    for i in range(40):
        await app.dispatch(order("Place", f"o-{i}"))
    await app.close(grace=0.2)
    emitter = app.bus.emitter
    assert 0 < emitter.emitted < 40 and emitter.dropped == 40 - emitter.emitted
    assert app.health.tasks[TASK_NAME].state == "stopped"


async def test_a_full_queue_or_a_closed_app_drops_events() -> None:
    """At most once: events over the queue bound, or committed while the app is not open, are
    dropped and counted, never blocking dispatch."""
    app = make_app()
    app.bus.emitter.max_queue = 2
    gate = asyncio.Event()
    seen: list[str] = []

    async def blocked(event: RecordedEvent) -> None:
        await gate.wait()
        seen.append(event.stream.aggregate_id)

    app.on_committed("order.placed", blocked)
    await app.dispatch(order("Place", "before-open"))
    assert app.bus.emitter.dropped == 1
    async with app:
        await app.dispatch(order("Place", "o-0"))
        await until(lambda: app.bus.emitter.pending == 0)  # the handler holds o-0
        for i in range(1, 5):
            await app.dispatch(order("Place", f"o-{i}"))
        gate.set()
        await until(lambda: len(seen) == 3)
    assert seen == ["o-0", "o-1", "o-2"]  # o-0 in hand, o-1 and o-2 queued
    assert app.bus.emitter.dropped == 3


class Fatal(BaseException):
    """Not an Exception: it escapes the handler guard and ends the emitter's task."""


async def test_a_dead_emitter_task_shows_in_health() -> None:
    """When the emitter's task dies, health says so and events are dropped, not hoarded."""
    app = make_app()

    def fatal(event: RecordedEvent) -> None:
        raise Fatal("the handler kills the loop")

    app.on_committed("order.placed", fatal)
    async with app:
        await app.dispatch(order("Place", "a"))
        await until(lambda: app.health.tasks[TASK_NAME].state == "dead")
        assert any(TASK_NAME in p and "Fatal" in p for p in app.health.problems())
        assert any(TASK_NAME in p for p in app.health.fatal())
        await app.dispatch(order("Place", "b"))
        assert app.bus.emitter.pending == 0 and app.bus.emitter.dropped == 1
        app.on_committed("order.shipped", lambda e: None)  # registering restarts it
        assert app.health.tasks[TASK_NAME].state == "running"


async def test_dcb_decider_events_are_emitted() -> None:
    """Events a DcbDecider appended (tagged, no stream) reach the handlers after commit."""
    app = make_app()
    seats = chronik.DcbDecider(
        "seats",
        lambda c: Query.of(types=["order.placed"], tags=[f"seat:{c.aggregate_id}"]),
        lambda c, s: None if s else OrderPlaced(c.aggregate_id),
        lambda s, e: True,
        lambda: False,
        tags=lambda e: [f"seat:{e.order_id}"],
    )
    app.add_model(seats)
    seen: list[RecordedEvent] = []
    app.on_committed("order.placed", seen.append)
    async with app:
        result = await app.dispatch(Command(domain="seats", aggregate_id="s1", type="Take"))
        again = await app.dispatch(Command(domain="seats", aggregate_id="s1", type="Take"))
        assert again.events == []
        await until(lambda: len(seen) == 1)
        await asyncio.sleep(0.05)
    assert [e.event_id for e in seen] == [result.events[0].event_id]
    assert seen[0].tags == ("seat:s1",)


async def test_reaction_and_saga_commands_are_emitted() -> None:
    """Commands sent by a reaction and by a saga go through the app: their events emit."""
    app = make_app()

    def mail(event: RecordedEvent) -> list[Command]:
        return [Command(domain="mail", aggregate_id=event.stream.aggregate_id, type="Send")]

    app.add_projection(reaction("mailer", ["order.placed"], mail, app.dispatch))

    class Shipping(msgspec.Struct):
        done: bool = False

    saga: Saga[Shipping] = Saga("shipping", state=Shipping, associate="order_id")

    @saga.starts_with("mail.sent")
    def _ship(state: Shipping, event: RecordedEvent, ctx: SagaContext) -> Shipping:
        ctx.send(order("Ship", ctx.instance_id))
        ctx.end()
        return state

    app.add_saga(saga)
    seen: list[str] = []
    app.on_committed(lambda e: True, lambda e: seen.append(f"{e.type}@{e.stream.aggregate_id}"))
    async with app:
        await app.dispatch(order("Place", "o-9"))
        await until(lambda: len(seen) == 3)
    assert seen == ["order.placed@o-9", "mail.sent@o-9", "order.shipped@o-9"]


async def test_bad_registrations_are_refused_with_the_field() -> None:
    """A matcher or handler of the wrong shape is a ValidationError naming the field."""
    app = make_app()
    for bad in (42, [], ["ok", ""], "bad type!"):
        with pytest.raises(chronik.ValidationError) as err:
            app.on_committed(bad, lambda e: None)  # type: ignore[arg-type]
        assert err.value.field == "type_or_predicate"
    with pytest.raises(chronik.ValidationError) as err:
        app.on_committed("order.placed")(None)  # type: ignore[arg-type]
    assert err.value.field == "handler"
    with pytest.raises(chronik.ValidationError):
        app.on_committed(3.5)  # type: ignore[call-overload]
    assert app.bus.emitter.handlers == ()


async def test_the_outbox_rule_unit_commits_before_handlers_run() -> None:
    """With an outbox rule the events commit in a unit of work; they are emitted after it."""
    app = make_app()
    app.add_outbox(lambda event, data, stream: Message(topic="t", id=data.event_id, body=b"{}"))
    rows: list[int] = []

    async def count_outbox(event: RecordedEvent) -> None:
        rows.append(len(await app.store.read_table("outbox_messages")))

    app.on_committed("order.placed", count_outbox)
    async with app:
        await app.dispatch(order("Place"))
        await until(lambda: rows == [1])
