"""Step definitions of features/evolution.feature."""

from __future__ import annotations

import json

from pytest_bdd import given, parsers, scenarios, then, when

import chronik
from chronik import Command, StreamId
from tests.acceptance.conftest import ItemAdded, World, evolve, registry

scenarios("features/evolution.feature")


@given(
    parsers.parse(
        'aggregate "{aggregate_id}" has {count:d} "{event_type}" events, '
        "snapshotted every {every:d} events"
    )
)
def many_events(world: World, aggregate_id: str, count: int, event_type: str, every: int) -> None:
    assert event_type == "ItemAdded" and every == 100
    for i in range(count):
        world.dispatch(
            Command(
                domain="orders", aggregate_id=aggregate_id, type="AddItem", payload={"sku": f"s{i}"}
            )
        )
    world.run(world.app.bus.repository.drain())


@given(
    parsers.parse(
        'a stored "{event_type}" event of aggregate "{aggregate_id}" at schema version '
        "{version:d} with payload {payload}"
    )
)
def stored_old_event(
    world: World, event_type: str, aggregate_id: str, version: int, payload: str
) -> None:
    event = chronik.EventData(event_type, json.loads(payload), schema_version=version)
    world.run(world.app.store.append(StreamId("orders", aggregate_id), [event]))


@when(parsers.parse('the aggregate "{aggregate_id}" is loaded'))
def load(world: World, aggregate_id: str) -> None:
    repository = world.app.bus.repository
    model = world.app.bus.model("orders")
    world.loaded = world.run(repository.load(model, StreamId("orders", aggregate_id), False))
    world.loaded_id = aggregate_id  # type: ignore[attr-defined]


@then(
    parsers.parse(
        "it was loaded from the snapshot at sequence {sequence:d} plus {tail:d} later events"
    )
)
def from_snapshot(world: World, sequence: int, tail: int) -> None:
    assert world.loaded.snapshot_sequence == sequence and world.loaded.replayed == tail


@then("its state equals a full replay of its events")
def equals_replay(world: World) -> None:
    stream = StreamId("orders", world.loaded_id)  # type: ignore[attr-defined]

    async def replay() -> object:
        state = world.app.bus.model("orders").initial(stream.aggregate_id)
        async for event in world.app.store.read_stream(stream):
            state = evolve(state, registry.decode(event))
        return state

    full = world.run(replay())
    assert world.loaded.state == full and world.loaded.state.events == 250


@then(parsers.parse("its state lists the item {item}"))
def lists_item(world: World, item: str) -> None:
    assert world.loaded.state.items == [ItemAdded(**json.loads(item))]


@then(
    parsers.parse("the stored event is still at schema version {version:d} with payload {payload}")
)
def stored_unchanged(world: World, version: int, payload: str) -> None:
    stream = StreamId("orders", world.loaded_id)  # type: ignore[attr-defined]
    stored = world.run(world.app.store.get_event(world.run(_first_id(world, stream))))
    assert stored is not None and stored.schema_version == version
    assert stored.json() == json.loads(payload)


async def _first_id(world: World, stream: StreamId) -> str:
    async for event in world.app.store.read_stream(stream, limit=1):
        return event.event_id
    raise AssertionError("no events")
