"""Shared steps of the acceptance features: an in-memory app with the "orders" decider."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import msgspec
import pytest
from pytest_bdd import given, parsers, then, when

import chronik
from chronik import Command, StreamId

T = TypeVar("T")
registry = chronik.EventRegistry()


@registry.event()
class OrderCreated(msgspec.Struct):
    pass


@registry.event(version=3)
class ItemAdded(msgspec.Struct):
    sku: str
    qty: int
    price_cents: int


@registry.event()
class OrderShipped(msgspec.Struct):
    pass


@registry.upcaster("ItemAdded", from_version=1)
def _item_v1(payload: dict[str, Any]) -> dict[str, Any]:  # v2 added the quantity
    return {**payload, "qty": 1}


@registry.upcaster("ItemAdded", from_version=2)
def _item_v2(payload: dict[str, Any]) -> dict[str, Any]:  # v3 added the price
    return {**payload, "price_cents": 0}


class Order(msgspec.Struct):
    events: int = 0
    shipped: bool = False
    items: list[ItemAdded] = []


SAMPLE: dict[str, Any] = {
    "OrderCreated": OrderCreated(),
    "ItemAdded": ItemAdded("sku-1", 1, 100),
    "OrderShipped": OrderShipped(),
}


class World:
    """One scenario's app, loop and observations."""

    def __init__(self, snapshot_every: int | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = chronik.Chronik(store="memory://", registry=registry)
        self.calls: list[int] = []  # prior events seen by each decision
        self.results: list[chronik.CommandResult] = []
        self.error: Exception | None = None
        self.loaded: Any = None
        self.app.add_decider(
            "orders",
            self.decide,
            evolve,
            Order,
            commands={"AddItem": None, "ShipOrder": None},
            snapshots=chronik.Snapshots(every=snapshot_every or 100),
        )

    def decide(self, command: Command, state: Order) -> Any:
        self.calls.append(state.events)
        if state.shipped:
            raise chronik.CommandRejected("Order already shipped")
        if command.type == "ShipOrder":
            return OrderShipped()
        return ItemAdded(command.payload.get("sku", "sku-1"), 1, 100)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def dispatch(self, command: Command) -> None:
        try:
            self.results.append(self.run(self.app.dispatch(command)))
        except chronik.ChronikError as exc:
            self.error = exc


def evolve(state: Order, event: Any) -> Order:
    if isinstance(event, OrderShipped):
        return Order(state.events + 1, True, state.items)
    if isinstance(event, ItemAdded):
        return Order(state.events + 1, state.shipped, [*state.items, event])
    return Order(state.events + 1, state.shipped, state.items)


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.run(w.app.close())
    w.loop.close()


@given(parsers.parse('prior events for aggregate "{aggregate_id}" in domain "{domain}":'))
def prior_events(world: World, aggregate_id: str, domain: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    column = {name: i for i, name in enumerate(header)}
    stream = StreamId(domain, aggregate_id)
    for row in rows:
        event = registry.to_event_data(SAMPLE[row[column["event_type"]]])
        sequence = int(row[column["sequence"]])
        expected = chronik.NO_STREAM if sequence == 0 else sequence - 1
        world.run(world.app.store.append(stream, [event], expected))


@when(parsers.parse('I send an "{command_type}" command for aggregate "{aggregate_id}"'))
def send(world: World, command_type: str, aggregate_id: str) -> None:
    world.dispatch(Command(domain="orders", aggregate_id=aggregate_id, type=command_type))


@when(
    parsers.parse(
        'I send an "{command_type}" command with id "{command_id}" for aggregate "{aggregate_id}"'
    )
)
def send_with_id(world: World, command_type: str, command_id: str, aggregate_id: str) -> None:
    world.dispatch(
        Command(
            domain="orders", aggregate_id=aggregate_id, type=command_type, command_id=command_id
        )
    )


@then(parsers.parse('{count:d} events total exist for aggregate "{aggregate_id}"'))
def events_total(world: World, count: int, aggregate_id: str) -> None:
    version = world.run(world.app.store.stream_version(StreamId("orders", aggregate_id)))
    assert (0 if version is None else version + 1) == count
