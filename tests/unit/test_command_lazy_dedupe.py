"""Lazy dedupe: the bus skips the read by command id before deciding; duplicates still get
the earlier result, and writes by another process (two apps on one SQLite file) are caught."""

from __future__ import annotations

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


class Open(msgspec.Struct):
    owner: str


class Deposit(msgspec.Struct):
    amount: int


def decide(command: Command, state: dict[str, Any]) -> Any:
    if command.type == "Open":
        if state.get("owner"):
            raise chronik.CommandRejected("Account already open")
        return Opened(command.payload.owner)
    if command.payload.amount <= 0:
        return None
    return Deposited(command.payload.amount)


def evolve(state: dict[str, Any], event: Any) -> dict[str, Any]:
    if isinstance(event, Opened):
        return {**state, "owner": event.owner, "balance": 0}
    return {**state, "balance": state["balance"] + event.amount}


def make_app(url: str) -> chronik.Chronik:
    app = chronik.Chronik(store=url, registry=registry)
    app.add_decider("account", decide, evolve, dict, commands={"Open": Open, "Deposit": Deposit})
    return app


def cmd(type_: str, payload: dict[str, Any], aggregate_id: str = "a1", **kw: Any) -> Command:
    return Command(domain="account", aggregate_id=aggregate_id, type=type_, payload=payload, **kw)


async def stored(app: chronik.Chronik, aggregate_id: str = "a1") -> list[chronik.RecordedEvent]:
    return [e async for e in app.store.read_stream(StreamId("account", aggregate_id))]


async def test_another_process_appending_between_two_commands_is_caught(tmp_path: Path) -> None:
    """Another process appending between two cached commands: decided again on a fresh load."""
    url = f"sqlite:///{tmp_path}/two.db"
    async with make_app(url) as one, make_app(url) as two:
        await one.dispatch(cmd("Open", {"owner": "ada"}, command_id="open"))  # one caches v0
        await two.dispatch(cmd("Deposit", {"amount": 7}, command_id="d-7"))  # v1, behind one
        r = await one.dispatch(cmd("Deposit", {"amount": 5}, command_id="d-5"))
        assert not r.duplicate and r.version == 2 and r.events[0].sequence == 2
        assert [e.event_id for e in await stored(one)][2] == event_id_for("d-5", 0)
        assert (await one.load("account", "a1"))["balance"] == 12
        r2 = await one.dispatch(cmd("Deposit", {"amount": 1}, command_id="d-1"))
        assert r2.version == 3 and (await two.load("account", "a1"))["balance"] == 13


async def test_a_duplicate_from_another_process_gets_the_earlier_result(tmp_path: Path) -> None:
    """An id handled by another process: the append meets its event id; the earlier result."""
    url = f"sqlite:///{tmp_path}/dup.db"
    async with make_app(url) as one, make_app(url) as two:
        await two.dispatch(cmd("Open", {"owner": "ada"}, command_id="open"))
        first = await two.dispatch(cmd("Deposit", {"amount": 5}, command_id="d-5"))
        await one.dispatch(cmd("Deposit", {"amount": 1}, command_id="d-1"))  # one caches v2
        again = await one.dispatch(cmd("Deposit", {"amount": 5}, command_id="d-5"))
        assert again.duplicate and again.events == first.events and again.version == 1
        assert len(await stored(one)) == 3
        after = await one.dispatch(cmd("Deposit", {"amount": 2}, command_id="d-2"))
        assert after.version == 3 and (await one.load("account", "a1"))["balance"] == 8


async def test_a_duplicate_the_state_now_rejects_gets_the_earlier_result(tmp_path: Path) -> None:
    """A duplicate that today's state would refuse still gets the earlier result."""
    url = f"sqlite:///{tmp_path}/rejected.db"
    async with make_app(url) as one, make_app(url) as two:
        first = await two.dispatch(cmd("Open", {"owner": "ada"}, command_id="open"))
        await one.dispatch(cmd("Deposit", {"amount": 1}, command_id="d-1"))  # one caches v1
        again = await one.dispatch(cmd("Open", {"owner": "ada"}, command_id="open"))
        assert again.duplicate and again.events == first.events and again.version == 0
        with pytest.raises(chronik.CommandRejected):
            await one.dispatch(cmd("Open", {"owner": "bob"}, command_id="open-2"))
        nothing = await one.dispatch(cmd("Deposit", {"amount": 0}, command_id="d-0"))
        assert nothing.events == [] and not nothing.duplicate and nothing.version == 1


async def test_an_id_used_for_another_stream_is_refused_on_a_cached_state(tmp_path: Path) -> None:
    """A command id another process used for another stream is refused as before."""
    url = f"sqlite:///{tmp_path}/other.db"
    async with make_app(url) as one, make_app(url) as two:
        await two.dispatch(cmd("Open", {"owner": "bob"}, aggregate_id="a2", command_id="x"))
        await one.dispatch(cmd("Open", {"owner": "ada"}, command_id="open"))  # one caches a1
        with pytest.raises(chronik.ValidationError, match="already used"):
            await one.dispatch(cmd("Deposit", {"amount": 5}, command_id="x"))
        assert len(await stored(one)) == 1
        r = await one.dispatch(cmd("Deposit", {"amount": 5}, command_id="y"))
        assert r.version == 1


async def test_an_id_this_process_appended_is_answered_without_a_decision() -> None:
    """A duplicate of an id appended here lately is found before the logic runs."""
    calls: list[str] = []

    async def count(command: Command, state: Any, call_next: Any) -> list[Any]:
        calls.append(command.command_id or "")
        result: list[Any] = await call_next(command, state)
        return result

    async with make_app("memory://") as app:
        app.use_handler(count)
        await app.dispatch(cmd("Open", {"owner": "ada"}, command_id="open"))
        first = await app.dispatch(cmd("Deposit", {"amount": 5}, command_id="d-5"))
        again = await app.dispatch(cmd("Deposit", {"amount": 5}, command_id="d-5"))
        assert again.duplicate and again.events == first.events
        assert calls == ["open", "d-5"]


async def test_the_short_encoding_stores_what_store_prepare_makes(tmp_path: Path) -> None:
    """Stored payload and metadata bytes equal store.prepare's; a lone surrogate is refused."""
    async with make_app(f"sqlite:///{tmp_path}/bytes.db") as app:
        meta = {"who": "zoë", "correlation_id": "flow-1"}
        r = await app.dispatch(cmd("Open", {"owner": "åda"}, command_id="open", metadata=meta))
        md = chronik.Metadata(meta).of_command("open")
        data = registry.to_event_data(Opened("åda"), md, event_id_for("open", 0))
        expected = app.store.prepare(StreamId("account", "a1"), [data], chronik.NO_STREAM)
        got = (await stored(app))[0]
        assert (got.payload, got.raw_metadata) == expected.events[0][3:5]
        assert r.events[0].metadata == md
        with pytest.raises(chronik.ValidationError, match="metadata"):
            await app.dispatch(cmd("Deposit", {"amount": 1}, metadata={"x": "\udc80"}))
        assert len(await stored(app)) == 1


async def test_with_outbox_rules_a_duplicate_records_no_message_again(tmp_path: Path) -> None:
    """Outbox rules keep the read by command id: another process's duplicate adds no message."""
    from chronik.outbox import OutboxAdmin
    from chronik.transports.message import Message

    calls = iter(range(100))

    def rule(event: Any, data: chronik.PreparedEvent, stream: StreamId) -> Message:
        return Message(topic="account.events", id=f"m-{next(calls)}", body=data.payload)

    url = f"sqlite:///{tmp_path}/outbox.db"
    async with make_app(url) as one, make_app(url) as two:
        for app in (one, two):
            app.add_outbox(rule)
        await two.dispatch(cmd("Open", {"owner": "ada"}, command_id="open"))
        first = await two.dispatch(cmd("Deposit", {"amount": 5}, command_id="d-5"))
        await one.dispatch(cmd("Deposit", {"amount": 1}, command_id="d-1"))  # one caches v2
        again = await one.dispatch(cmd("Deposit", {"amount": 5}, command_id="d-5"))
        assert again.duplicate and again.events == first.events
        rows = await OutboxAdmin(one.store).messages()
        assert sorted(r["id"] for r in rows) == ["m-0", "m-1", "m-2"]  # one per event


async def test_with_outbox_rules_only_a_decision_with_messages_reads_by_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision the rules make no message of is deduped lazily (no read by command id) and a
    duplicate of it still gets the earlier result; one with a message reads first."""
    from chronik import decisions
    from chronik.outbox import OutboxAdmin
    from chronik.transports.message import Message

    reads: list[str] = []
    earlier = decisions.earlier

    async def counted(store: Any, stream: StreamId, command_id: str, first: Any) -> Any:
        reads.append(command_id)
        return await earlier(store, stream, command_id, first)

    monkeypatch.setattr(decisions, "earlier", counted)

    def rule(event: Any, data: chronik.PreparedEvent, stream: StreamId) -> Message | None:
        if not isinstance(event, Opened):
            return None
        return Message(topic="account.opened", id=data.event_id, body=data.payload)

    url = f"sqlite:///{tmp_path}/lazy-outbox.db"
    async with make_app(url) as one, make_app(url) as two:
        for app in (one, two):
            app.add_outbox(rule)
        await two.dispatch(cmd("Open", {"owner": "ada"}, command_id="open"))
        assert reads == ["open"]
        first = await two.dispatch(cmd("Deposit", {"amount": 5}, command_id="d-5"))
        await one.dispatch(cmd("Deposit", {"amount": 1}, command_id="d-1"))  # one caches v2
        assert reads == ["open"]
        again = await one.dispatch(cmd("Deposit", {"amount": 5}, command_id="d-5"))
        assert again.duplicate and again.events == first.events
        assert reads == ["open", "d-5"]  # after its append met the stored event id
        assert len(await stored(one)) == 3
        assert [r["id"] for r in await OutboxAdmin(one.store).messages()] == [
            event_id_for("open", 0)
        ]
