"""Closing the books with the model: an aggregate's history up to a sequence becomes one
summary event it produces; loads, commands, scavenging and rebuilding readers go on from it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

import chronik
from chronik.aggregate import AggregateModel
from chronik.lifecycle.compaction import compact_aggregate, compaction_id
from chronik.lifecycle.scavenger import scavenge
from chronik.store.base import EventStore


class Deposited(msgspec.Struct):
    """Money in."""

    cents: int


class BooksClosed(msgspec.Struct):
    """The summary of a ledger's history: its balance and how many deposits it had."""

    balance: int
    deposits: int


class Deposit(msgspec.Struct):
    """The ledger's command."""

    cents: int


class Ledger(chronik.Aggregate):
    """A ledger: a balance and a count of deposits; it closes its books into one event."""

    domain = "ledger"
    balance: int = 0
    deposits: int = 0

    @chronik.command()
    def deposit(self, cmd: Deposit) -> None:
        self.emit(Deposited(cmd.cents))

    @chronik.apply
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.cents
        self.deposits += 1

    @chronik.apply
    def _closed(self, event: BooksClosed) -> None:
        self.balance, self.deposits = event.balance, event.deposits

    def closing_event(self) -> BooksClosed:
        return BooksClosed(self.balance, self.deposits)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/c.db"
    async with chronik.open_store(url) as s:
        yield s


def _app(store: EventStore) -> tuple[chronik.Chronik, chronik.EventRegistry, AggregateModel]:
    registry = chronik.EventRegistry()
    registry.register(Deposited, "ledger.deposited")
    registry.register(BooksClosed, "ledger.books_closed")
    app = chronik.Chronik(store=store, registry=registry)
    model = AggregateModel(Ledger)
    app.add_model(model)
    return app, registry, model


def _deposit(cents: int) -> chronik.Command:
    return chronik.Command(
        domain="ledger", aggregate_id="l1", type="Deposit", payload={"cents": cents}
    )


async def test_the_model_closes_the_books_and_commands_go_on(store: EventStore) -> None:
    """The summary replaces events 0..2 at sequence 2 (position kept); the next command
    folds from it; after a scavenge a rebuild reads the summary first; a second run answers
    the stored summary."""
    app, registry, model = _app(store)
    results = [await app.dispatch(_deposit(c)) for c in (10, 20, 30, 40)]
    stream = chronik.StreamId("ledger", "l1")
    summary = await compact_aggregate(store, registry, model, "l1", 2)
    assert summary.event_id == compaction_id(stream, 2)
    assert (summary.sequence, summary.type) == (2, "ledger.books_closed")
    assert summary.position == results[2].events[0].position
    assert registry.decode(summary) == BooksClosed(60, 3)
    assert await compact_aggregate(store, registry, model, "l1", 2) == summary
    after = await app.dispatch(_deposit(5))
    assert [e.sequence for e in after.events] == [4]
    assert (await scavenge(store)).events == 2
    rebuilt = [registry.decode(e) async for e in store.read_all()]
    assert rebuilt == [BooksClosed(60, 3), Deposited(40), Deposited(5)]
    state = Ledger("l1")
    for event in rebuilt:
        state._apply(event)
    assert (state.balance, state.deposits) == (105, 5)


async def test_a_model_without_a_summary_is_refused(store: EventStore) -> None:
    """A summary the registry does not know raises UnknownEventType, a sequence the stream
    does not show ValidationError naming ``upto``; nothing changes."""
    app, registry, model = _app(store)
    await app.dispatch(_deposit(1))
    with pytest.raises(chronik.UnknownEventType):
        await compact_aggregate(store, registry, model, "l1", 0, summarize=lambda s: object())
    with pytest.raises(chronik.ValidationError) as bad:
        await compact_aggregate(store, registry, model, "l1", 5)
    assert bad.value.field == "upto"
    assert [e.type async for e in store.read_stream(chronik.StreamId("ledger", "l1"))] == [
        "ledger.deposited"
    ]
