"""Step definitions of features/commands.feature."""

from __future__ import annotations

from typing import Any

from pytest_bdd import given, parsers, scenarios, then

import chronik
from chronik import StreamId
from tests.acceptance.conftest import ItemAdded, World, registry

scenarios("features/commands.feature")


@given(
    parsers.parse(
        'another writer appends an "{event_type}" event to "{aggregate_id}" '
        "during the first decision"
    )
)
def interfering_writer(world: World, event_type: str, aggregate_id: str) -> None:
    async def interfere(command: chronik.Command, state: Any, call_next: Any) -> list[Any]:
        if not world.calls:
            stream = StreamId("orders", aggregate_id)
            event = registry.to_event_data(ItemAdded("other", 1, 5))
            await world.app.store.append(stream, [event], state.events - 1)
        result: list[Any] = await call_next(command, state)
        return result

    world.app.use_handler(interfere)


@then(parsers.parse("the business logic receives the command with {count:d} prior events"))
def logic_saw(world: World, count: int) -> None:
    assert world.error is None, world.error
    assert world.calls[-1] == count


@then(parsers.parse("the business logic was called {count:d} times"))
def logic_calls(world: World, count: int) -> None:
    assert len(world.calls) == count


@then(parsers.parse('the command is rejected with "{reason}"'))
def rejected(world: World, reason: str) -> None:
    assert isinstance(world.error, chronik.CommandRejected) and world.error.reason == reason


@then(parsers.parse('the command fails with UnknownCommandType naming "{name}"'))
def unknown_type(world: World, name: str) -> None:
    assert isinstance(world.error, chronik.UnknownCommandType)
    assert not isinstance(world.error, chronik.CommandRejected) and name in str(world.error)


@then("the second result is a duplicate of the first")
def duplicate(world: World) -> None:
    first, second = world.results
    assert second.duplicate and not first.duplicate and second.events == first.events
