"""Commands caused by events carry one rule's correlation and causation ids, whoever sends
them: a saga, a reaction or an aggregate's deadline (``Metadata.caused_by``)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

import chronik
from chronik import Command, Metadata, RecordedEvent
from chronik.deadlines import ManualClock, schedule
from chronik.reactions import reaction
from chronik.sagas import Saga, SagaContext

registry = chronik.EventRegistry()


@registry.event()
class Opened(msgspec.Struct):
    ticket: str


def decide(command: Command, state: dict[str, Any]) -> Any:
    if command.type == "Open":
        return [Opened(command.aggregate_id), schedule("nudge", 60, "Nudge")]
    return None  # the commands under test change nothing


def evolve(state: dict[str, Any], event: Any) -> dict[str, Any]:
    return state


class Flow(msgspec.Struct):
    pass


saga: Saga[Flow] = Saga("flow", state=Flow, associate="ticket")


@saga.starts_with("Opened")
def _opened(state: Flow, event: RecordedEvent, ctx: SagaContext) -> Flow:
    ctx.send(
        Command(
            domain="ticket",
            aggregate_id=ctx.instance_id,
            type="FromSaga",
            metadata={"user": "ada", "correlation_id": "own"},
        )
    )
    return state


def react(event: RecordedEvent) -> list[Command]:
    own = {"user": "ada", "correlation_id": "own"}
    return [Command(domain="ticket", aggregate_id="t-1", type="FromReaction", metadata=own)]


def test_caused_by_takes_the_events_correlation_or_its_id() -> None:
    """caused_by: correlation = the event's correlation id (else its event id), causation =
    the event id, the command's other keys kept."""
    stream = chronik.StreamId("ticket", "t-1")
    raw = msgspec.json.encode({"correlation_id": "flow-1"})
    event = RecordedEvent("e-1", stream, 0, "Opened", 1, b"{}", chronik.Position(1), 0, raw)
    md = Metadata.caused_by(event, {"user": "ada", "correlation_id": "own"})
    assert dict(md) == {"user": "ada", "correlation_id": "flow-1", "causation_id": "e-1"}
    bare = RecordedEvent("e-2", stream, 1, "Opened", 1, b"{}", chronik.Position(2), 0)
    assert dict(Metadata.caused_by(bare)) == {"correlation_id": "e-2", "causation_id": "e-2"}


async def test_saga_reaction_and_deadline_stamp_their_commands_alike() -> None:
    """The commands a saga, a reaction and an aggregate deadline send each carry
    Metadata.caused_by(the event that caused them): the deadline's keeps a correlation id."""
    clock = ManualClock()
    app = chronik.Chronik("memory://", registry=registry, run_deadlines=True, clock=clock)
    app.add_decider("ticket", decide, evolve, dict)
    app.add_saga(saga)
    app.add_projection(reaction("echo", ["Opened"], react, app.dispatch))
    seen: dict[str, Metadata] = {}

    async def capture(command: Command, call_next: Any) -> chronik.CommandResult:
        seen[command.type] = Metadata.of(command.metadata)
        return await call_next(command)

    app.use(capture)
    async with app:
        opened = await app.dispatch(
            Command(
                domain="ticket",
                aggregate_id="t-1",
                type="Open",
                metadata={"correlation_id": "flow-1"},
            )
        )
        cause = opened.events[0]
        clock.advance(61)
        async with asyncio.timeout(10):
            while len(seen) < 4:
                await asyncio.sleep(0.02)
        fired = [e async for e in app.store.read_all() if e.type == "chronik.DeadlineFired"]
    expected = Metadata.caused_by(cause, {"user": "ada", "correlation_id": "own"})
    assert seen["FromSaga"] == expected
    assert seen["FromReaction"] == expected
    assert seen["FromSaga"]["correlation_id"] == "flow-1"
    assert seen["Nudge"] == Metadata.caused_by(fired[0])
    assert seen["Nudge"].correlation_id == fired[0].event_id
