"""The command bus: routing, retries, idempotency, middleware and bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

import chronik
from chronik import Command, StreamId
from chronik.commands import event_id_for

registry = chronik.EventRegistry()


@registry.event()
class Opened(msgspec.Struct):
    owner: str


@registry.event()
class Deposited(msgspec.Struct):
    amount: int


class Open(msgspec.Struct, forbid_unknown_fields=True):
    owner: str


class Deposit(msgspec.Struct):
    amount: int
    note: str = ""


class Unregistered(msgspec.Struct):
    x: int


def decide(command: Command, state: dict[str, Any]) -> Any:
    match command.type:
        case "Open":
            if state.get("owner"):
                raise chronik.CommandRejected("Account already open")
            return Opened(command.payload.owner)
        case "Deposit":
            if command.payload.amount == 13:
                raise RuntimeError("unlucky")
            if command.payload.amount == 14:
                return Unregistered(1)
            if command.payload.amount == 15:
                return chronik.EventData("Deposited", {"amount": "lots"})
            if command.payload.amount == 0:
                return None
            return [Deposited(command.payload.amount)]
    raise AssertionError(command.type)


def evolve(state: dict[str, Any], event: Any) -> dict[str, Any]:
    if isinstance(event, Opened):
        return {**state, "owner": event.owner, "balance": 0, "seen": state.get("seen", 0) + 1}
    return {**state, "balance": state["balance"] + event.amount, "seen": state["seen"] + 1}


def make_app(store: str | chronik.EventStore = "memory://", **options: Any) -> chronik.Chronik:
    app = chronik.Chronik(store=store, registry=registry, **options)
    app.add_decider("account", decide, evolve, dict, commands={"Open": Open, "Deposit": Deposit})
    return app


def cmd(type_: str, payload: dict[str, Any], aggregate_id: str = "a1", **kw: Any) -> Command:
    return Command(domain="account", aggregate_id=aggregate_id, type=type_, payload=payload, **kw)


async def all_events(app: chronik.Chronik) -> list[chronik.RecordedEvent]:
    return [e async for e in app.store.read_all()]


async def test_dispatch_appends_with_correlation_and_causation() -> None:
    """Events carry the command's correlation id and causation id = command id."""
    async with make_app() as app:
        r = await app.dispatch(
            cmd("Open", {"owner": "ada"}, command_id="c-1", metadata={"correlation_id": "req-9"})
        )
        assert [e.type for e in r.events] == ["Opened"] and r.version == 0
        assert r.events[0].metadata.correlation_id == "req-9"
        assert r.events[0].metadata.causation_id == "c-1"
        assert r.events == await all_events(app)  # what dispatch returned is what was stored
        r2 = await app.dispatch(cmd("Deposit", {"amount": 5}))
        assert r2.events[0].metadata.causation_id == r2.command_id
        assert r2.events[0].metadata.correlation_id == r2.command_id  # a new flow starts
        assert (await app.load("account", "a1"))["balance"] == 5


async def test_same_command_id_returns_the_first_result_and_appends_nothing() -> None:
    """Re-dispatching a command id returns the original events, marked duplicate."""
    async with make_app() as app:
        first = await app.dispatch(cmd("Open", {"owner": "ada"}, command_id="open-1"))
        again = await app.dispatch(cmd("Open", {"owner": "ada"}, command_id="open-1"))
        assert again.duplicate and again.events == first.events and again.version == 0
        assert len(await all_events(app)) == 1
        with pytest.raises(chronik.ValidationError, match="already used"):
            await app.dispatch(cmd("Open", {"owner": "bo"}, "a2", command_id="open-1"))


async def test_concurrent_duplicates_from_two_buses_append_once(tmp_path: Path) -> None:
    """Two apps (as two processes) racing the same command ids on one file append once each."""
    url = f"sqlite:///{tmp_path}/dup.db"
    async with make_app(url) as one, make_app(url) as two:
        await one.dispatch(cmd("Open", {"owner": "ada"}))
        commands = [cmd("Deposit", {"amount": 100 + i}, command_id=f"dep-{i}") for i in range(20)]
        results = await asyncio.gather(*(app.dispatch(c) for c in commands for app in (one, two)))
        for a, b in zip(results[::2], results[1::2], strict=True):
            assert a.events == b.events and len(a.events) == 1
        events = await all_events(one)
        assert len(events) == 21
        assert (await one.load("account", "a1"))["balance"] == sum(range(100, 120))


async def test_conflict_reloads_and_decides_again() -> None:
    """A write that lands between load and append makes the bus reload and decide again."""
    async with make_app() as app:
        await app.dispatch(cmd("Open", {"owner": "ada"}))
        calls: list[int] = []

        async def interfere(command: Command, state: Any, call_next: Any) -> list[Any]:
            calls.append(state["balance"])
            if len(calls) == 1:  # another writer gets in first
                await app.store.append(
                    StreamId("account", "a1"), [registry.to_event_data(Deposited(100))], 0
                )
            result: list[Any] = await call_next(command, state)
            return result

        app.use_handler(interfere)
        r = await app.dispatch(cmd("Deposit", {"amount": 5}))
        assert calls == [0, 100]  # the second decision saw the other write
        assert r.version == 2 and (await app.load("account", "a1"))["balance"] == 105


async def test_retries_are_bounded_then_concurrency_error() -> None:
    """A command that loses every race raises ConcurrencyError and appends nothing itself."""
    retry = chronik.RetryPolicy(attempts=3, base_delay=0.0001)
    async with make_app(retry=retry) as app:
        await app.dispatch(cmd("Open", {"owner": "ada"}))
        attempts = 0

        async def always_interfere(command: Command, state: Any, call_next: Any) -> list[Any]:
            nonlocal attempts
            attempts += 1
            version = await app.store.stream_version(StreamId("account", "a1"))
            await app.store.append(
                StreamId("account", "a1"), [registry.to_event_data(Deposited(1))], version
            )
            result: list[Any] = await call_next(command, state)
            return result

        app.use_handler(always_interfere)
        with pytest.raises(chronik.ConcurrencyError, match="3 times"):
            await app.dispatch(cmd("Deposit", {"amount": 5}, command_id="d-5"))
        assert attempts == 3
        assert all(e.metadata.causation_id != "d-5" for e in await all_events(app))


async def test_expected_sequence_is_checked_without_retry() -> None:
    """A command with expected_sequence runs only against that version."""
    async with make_app() as app:
        await app.dispatch(cmd("Open", {"owner": "ada"}))
        await app.dispatch(cmd("Deposit", {"amount": 1}, expected_sequence=0))
        with pytest.raises(chronik.WrongExpectedVersion) as info:
            await app.dispatch(cmd("Deposit", {"amount": 1}, expected_sequence=0))
        assert info.value.actual == 1
        with pytest.raises(chronik.WrongExpectedVersion):
            await app.dispatch(cmd("Open", {"owner": "x"}, "a9", expected_sequence=3))
        await app.dispatch(cmd("Open", {"owner": "x"}, "a9", expected_sequence=-1))


@pytest.mark.parametrize(
    ("command", "error", "text"),
    [
        (Command(domain="bank", aggregate_id="a", type="Open"), chronik.UnknownDomain, "'bank'"),
        (cmd("Close", {}), chronik.UnknownCommandType, "'Close'"),
        (cmd("Open", {"owner": 1, "extra": 2}), chronik.InvalidCommand, "extra: unknown field"),
        (cmd("Deposit", {}), chronik.InvalidCommand, "amount: required"),
        (cmd("Deposit", b"{not json"), chronik.InvalidCommand, "not valid JSON"),
        (cmd("Open", {"owner": "x"}, "bad id\n"), chronik.InvalidStreamId, "aggregate id"),
        (cmd("Open", {"owner": "x"}, command_id=""), chronik.ValidationError, "command id"),
        (cmd("Open one", {"owner": "x"}), chronik.ValidationError, "command type"),
        (Command(domain="Bad!", aggregate_id="a", type="Open"), chronik.InvalidStreamId, "domain"),
        (cmd("Deposit", {"amount": 13}), chronik.HandlerError, "unlucky"),
        (cmd("Deposit", {"amount": 14}), chronik.UnknownEventType, "Unregistered"),
        (cmd("Deposit", {"amount": 15}), chronik.SerializationError, "Deposited"),
    ],
)
async def test_bad_input_is_a_typed_error_and_stores_nothing(
    command: Command, error: type[Exception], text: str
) -> None:
    """Unknown domains and types, bad payloads and failing handlers store nothing."""
    async with make_app() as app:
        await app.dispatch(cmd("Open", {"owner": "ada"}))
        with pytest.raises(error, match=text) as info:
            await app.dispatch(command)
        assert not isinstance(info.value, chronik.CommandRejected)
        assert len(await all_events(app)) == 1
        r = await app.dispatch(cmd("Deposit", {"amount": 2}))  # the cache was not poisoned
        assert r.version == 1 and (await app.load("account", "a1"))["balance"] == 2


async def test_invalid_command_lists_every_bad_field() -> None:
    """InvalidCommand names each failing field, not only the first."""
    async with make_app() as app:
        with pytest.raises(chronik.InvalidCommand) as info:
            await app.dispatch(cmd("Deposit", {"amount": "x", "note": 3}))
        assert info.value.fields == ["amount", "note"]


async def test_rejection_and_no_op_store_nothing() -> None:
    """A rejection raises CommandRejected with the reason; a decision of None appends nothing."""
    async with make_app() as app:
        await app.dispatch(cmd("Open", {"owner": "ada"}))
        with pytest.raises(chronik.CommandRejected) as info:
            await app.dispatch(cmd("Open", {"owner": "bo"}))
        assert info.value.reason == "Account already open"
        r = await app.dispatch(cmd("Deposit", {"amount": 0}))
        assert r.events == [] and r.version == 0 and r.position is None
        assert len(await all_events(app)) == 1


async def test_dispatch_middleware_wraps_in_order_and_can_refuse() -> None:
    """Dispatch middleware runs outermost-first, may add metadata, and may refuse."""
    seen: list[str] = []

    async def outer(command: Command, call_next: Any) -> chronik.CommandResult:
        seen.append("outer")
        if command.payload.get("owner") == "mallory":
            raise PermissionError("not allowed")
        result: chronik.CommandResult = await call_next(command)
        seen.append("outer-done")
        return result

    async def inner(command: Command, call_next: Any) -> chronik.CommandResult:
        seen.append("inner")
        md = {**(command.metadata or {}), "user": "ada"}
        result: chronik.CommandResult = await call_next(
            msgspec.structs.replace(command, metadata=md)
        )
        return result

    async with make_app() as app:
        app.use(outer)
        app.use(inner)
        r = await app.dispatch(cmd("Open", {"owner": "ada"}))
        assert seen == ["outer", "inner", "outer-done"]
        assert r.events[0].metadata["user"] == "ada"
        with pytest.raises(PermissionError):
            await app.dispatch(cmd("Open", {"owner": "mallory"}, "a2"))
        assert len(await all_events(app)) == 1


async def test_cached_state_is_checked_against_other_writers(tmp_path: Path) -> None:
    """Two apps alternate on one aggregate: each one's cache goes stale and is reloaded."""
    url = f"sqlite:///{tmp_path}/cache.db"
    async with make_app(url) as one, make_app(url) as two:
        await one.dispatch(cmd("Open", {"owner": "ada"}))
        for i in range(10):
            await (one if i % 2 else two).dispatch(cmd("Deposit", {"amount": 1}))
        assert (await one.load("account", "a1"))["balance"] == 10
        assert (await one.dispatch(cmd("Deposit", {"amount": 1}))).version == 11


async def test_concurrent_commands_on_one_aggregate_are_serialized() -> None:
    """Many concurrent commands on one aggregate in one process all apply, none lost."""
    async with make_app() as app:
        await app.dispatch(cmd("Open", {"owner": "ada"}))
        await asyncio.gather(*(app.dispatch(cmd("Deposit", {"amount": 1})) for _ in range(50)))
        state = await app.load("account", "a1")
        assert state["balance"] == 50 and state["seen"] == 51
        assert not app.bus._locks  # the per-stream locks are released


async def test_an_evolve_that_fails_on_stored_events_is_a_handler_error() -> None:
    """A stored event the evolve function cannot handle fails the command with HandlerError."""
    async with make_app() as app:
        await app.store.append(
            StreamId("account", "a1"), [registry.to_event_data(Deposited(1))]
        )  # a deposit before the account was opened: evolve raises KeyError
        with pytest.raises(chronik.HandlerError, match="KeyError"):
            await app.dispatch(cmd("Deposit", {"amount": 1}))
        assert await app.store.stream_version(StreamId("account", "a1")) == 0


async def test_invalid_utf8_in_a_payload_is_invalid_command() -> None:
    """JSON bytes with invalid UTF-8 in a string are an InvalidCommand, not a crash."""
    async with make_app() as app:
        with pytest.raises(chronik.InvalidCommand, match="not valid JSON"):
            await app.dispatch(cmd("Open", b'{"owner": "\xff"}'))  # type: ignore[arg-type]
        with pytest.raises(chronik.SerializationError):
            await app.store.append(StreamId("x", "y"), [chronik.EventData("t", b'{"a": "\xff"}')])


async def test_a_racing_duplicate_stored_on_another_version_is_not_cached() -> None:
    """If a concurrent dispatch of the same command id won on a later version, the loser
    returns that result as a duplicate and does not cache its own (stale) state."""
    store = chronik.open_store("memory://")
    async with make_app(store) as one:
        two = make_app(store)
        await one.dispatch(cmd("Open", {"owner": "ada"}))
        await two.load("account", "a1")
        await two.dispatch(cmd("Deposit", {"amount": 1}))  # two caches version 1
        raced = False

        async def meanwhile(command: Command, state: Any, call_next: Any) -> list[Any]:
            nonlocal raced
            if not raced:  # one gets in first: another deposit, then this very command
                raced = True
                await one.dispatch(cmd("Deposit", {"amount": 7}))
                await one.dispatch(cmd("Deposit", {"amount": 5}, command_id="d-5"))
            result: list[Any] = await call_next(command, state)
            return result

        two.use_handler(meanwhile)
        r = await two.dispatch(cmd("Deposit", {"amount": 5}, command_id="d-5"))
        assert r.duplicate and r.version == 3 and r.events[0].sequence == 3
        r2 = await two.dispatch(cmd("Deposit", {"amount": 1}))
        assert r2.version == 4
        assert (await two.load("account", "a1"))["balance"] == 1 + 7 + 5 + 1


async def test_app_runs_its_projections_and_waits_for_them() -> None:
    """Projections added to the app start with it; wait_for gives read-your-writes."""
    from chronik.projections import Projection, ReadModel, Table, query

    balances = Projection(
        "balances", tables=[Table("balances", {"id": str, "n": int}, primary_key="id")]
    )

    @balances.on("Deposited")
    async def add(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("balances", id=event.stream.aggregate_id)
        rm.upsert(
            "balances",
            id=event.stream.aggregate_id,
            n=(row["n"] if row else 0) + event.json()["amount"],
        )

    app = make_app()
    app.add_projection(balances)
    async with app:
        await app.dispatch(cmd("Open", {"owner": "ada"}))
        result = await app.dispatch(cmd("Deposit", {"amount": 5}))
        await app.wait_for(result.position)
        assert await query(app.store, "balances", "balances") == [{"id": "a1", "n": 5}]
        with pytest.raises(chronik.ConfigurationError):
            app.add_projection(balances)
    with pytest.raises(chronik.ConfigurationError, match="no running projections"):
        await make_app().wait_for(result.position)


async def test_a_decider_may_return_raw_event_data_of_a_type_it_did_not_register() -> None:
    """A raw EventData of an unregistered type is stored as store.append would store it; evolve
    gets it as a RecordedEvent, both right after the command and when the stream is loaded."""
    seen: list[Any] = []

    def decide_raw(command: Command, state: dict[str, Any]) -> Any:
        return [
            Opened("ada"),
            chronik.EventData("account.noted", {"note": command.payload["note"]}, {"by": "me"}),
        ]

    def evolve_raw(state: dict[str, Any], event: Any) -> dict[str, Any]:
        seen.append(event)
        if isinstance(event, chronik.RecordedEvent):
            return {**state, "notes": [*state.get("notes", []), event.json()["note"]]}
        return {**state, "owner": event.owner}

    app = chronik.Chronik(store="memory://", registry=registry)
    app.add_decider("account", decide_raw, evolve_raw, dict)
    async with app:
        result = await app.dispatch(cmd("Note", {"note": "hello"}, command_id="n-1"))
        assert [e.type for e in result.events] == ["Opened", "account.noted"]
        stored = result.events[1]
        assert stored.json() == {"note": "hello"} and stored.metadata["by"] == "me"
        assert stored.event_id == event_id_for("n-1", 1)  # a retry appends nothing
        assert isinstance(seen[-1], chronik.RecordedEvent) and seen[-1].sequence == 1
        again = await app.dispatch(cmd("Note", {"note": "again"}))  # from the cached state
        assert again.version == 3
        state = await app.load("account", "a1")  # a fresh load: RecordedEvents again
        assert state == {"owner": "ada", "notes": ["hello", "again"]}


def _noting(command: Command, state: dict[str, Any]) -> Any:
    return [
        chronik.EventData("Opened", {"owner": "ada"}),  # a registered type: becomes Opened
        chronik.EventData("account.noted", {"note": command.payload["note"]}, {"by": "me"}),
    ]


def _evolve_notes(state: dict[str, Any], event: Any) -> dict[str, Any]:
    if isinstance(event, chronik.RecordedEvent):
        return {**state, "notes": [*state.get("notes", []), event.json()["note"]], "last": event}
    return {**state, "owner": event.owner}


async def test_given_treats_raw_event_data_as_the_bus_does() -> None:
    """With registry=, given/when/then accepts a raw EventData of an unregistered type as the
    bus does: evolve gets the RecordedEvent the bus builds (same id, sequence, metadata); a
    registered type's EventData becomes its class; a prior raw event is evolved recorded."""
    from chronik.testing import given

    prior = chronik.EventData("account.noted", {"note": "first"})
    outcome = (
        given(
            chronik.Decider("account", _noting, _evolve_notes),
            prior,
            aggregate_id="a1",
            registry=registry,
        )
        .when("Note", {"note": "hello"}, command_id="n-1")
        .then_events(Opened("ada"), chronik.EventData("account.noted", {"note": "hello"}))
        .then_state(lambda s: s["notes"] == ["first", "hello"] and s["owner"] == "ada")
    )
    app = chronik.Chronik(store="memory://", registry=registry)
    app.add_decider("account", _noting, _evolve_notes, dict)
    async with app:
        await app.store.append(StreamId("account", "a1"), [prior])
        result = await app.dispatch(cmd("Note", {"note": "hello"}, command_id="n-1"))
        bus = (await app.load("account", "a1"))["last"]
    ours = outcome.state["last"]
    assert bus == result.events[1]
    fields = ("event_id", "stream", "sequence", "type", "schema_version", "payload", "metadata")
    assert [getattr(ours, f) for f in fields] == [getattr(bus, f) for f in fields]


def test_given_still_refuses_what_the_bus_refuses() -> None:
    """An unregistered event instance is UnknownEventType with registry=; a raw EventData the
    store would refuse (a bad type name) is InvalidEventType; a different payload fails
    then_events."""
    from chronik.testing import given

    def decide_bad(command: Command, state: Any) -> Any:
        if command.type == "Typed":
            return Unregistered(1)
        return chronik.EventData(command.payload["type"], {"note": "x"})

    model = chronik.Decider("account", decide_bad, _evolve_notes, dict)
    given(model, registry=registry).when("Typed").then_error(chronik.UnknownEventType)
    bad = given(model, registry=registry).when("Raw", {"type": "not a type!"})
    bad.then_error(chronik.InvalidEventType)
    ok = given(model, registry=registry).when("Raw", {"type": "account.noted"})
    with pytest.raises(AssertionError, match="expected events"):
        ok.then_events(chronik.EventData("account.noted", {"note": "y"}))
    ok.then_events(chronik.EventData("account.noted", {"note": "x"}))
