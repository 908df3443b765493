"""Replay-safe process managers: a rebuild or reset replays the decision record, never the world.

The money-transfer scenario: a withdrawal rejected with "Insufficient funds", its compensation,
a reminder deadline that fired; later the balance would allow the withdrawal. Rebuilding the
saga (twice) must send nothing, move no money, fire nothing again and leave the same state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

import chronik
from chronik import Command
from chronik.commands import CommandResult
from chronik.deadlines import DeadlineScheduler, ManualClock
from chronik.errors import ReplayRefused
from chronik.projections import (
    ErrorPolicy,
    Projection,
    ProjectionAdmin,
    ProjectionRunner,
    ReadModel,
    query,
)
from chronik.reactions import reaction
from chronik.saga_record import RECORD
from chronik.sagas import Saga, SagaContext

registry = chronik.EventRegistry()


@registry.event()
class Opened(msgspec.Struct):
    balance: int


@registry.event()
class Withdrawn(msgspec.Struct):
    amount: int
    transfer_id: str


@registry.event()
class Deposited(msgspec.Struct):
    amount: int
    transfer_id: str = ""


@registry.event()
class TransferRequested(msgspec.Struct):
    transfer_id: str
    source: str
    target: str
    amount: int


@registry.event()
class TransferFailed(msgspec.Struct):
    transfer_id: str
    reason: str


@registry.event()
class Reminded(msgspec.Struct):
    transfer_id: str


@registry.event()
class Noted(msgspec.Struct):
    transfer_id: str


def account_decide(command: Command, balance: int) -> Any:
    p = command.payload
    if command.type == "Open":
        return Opened(p["balance"])
    if command.type == "Deposit":
        return Deposited(p["amount"], p.get("transfer_id", ""))
    if balance < p["amount"]:
        raise chronik.CommandRejected("Insufficient funds")
    return Withdrawn(p["amount"], p["transfer_id"])


def account_evolve(balance: int, event: Any) -> int:
    if isinstance(event, Opened):
        return event.balance
    return balance + (event.amount if isinstance(event, Deposited) else -event.amount)


def transfer_decide(command: Command, state: dict[str, Any]) -> Any:
    p, tid = command.payload, command.aggregate_id
    if command.type == "Request":
        return TransferRequested(tid, p["source"], p["target"], p["amount"])
    if command.type == "Fail":
        return TransferFailed(tid, p["reason"])
    if command.type == "Note":
        return Noted(tid)
    return Reminded(tid)


_FAST = ErrorPolicy(retries=3, backoff=0.001)


class Transfer(msgspec.Struct):
    status: str = ""
    reason: str = ""


def money_transfer(notify: bool = False, policy: ErrorPolicy | None = None) -> Saga[Transfer]:
    """The transfer saga; ``notify`` is the new code of a later release (one more command)."""
    saga: Saga[Transfer] = Saga(
        "money_transfer", state=Transfer, associate="transfer_id", policy=policy
    )

    @saga.starts_with("TransferRequested")
    def requested(state: Transfer, event: chronik.RecordedEvent, ctx: SagaContext) -> Transfer:
        t = registry.decode(event)
        payload = {"amount": t.amount, "transfer_id": t.transfer_id}
        ctx.send(Command(domain="account", aggregate_id=t.source, type="Withdraw", payload=payload))
        if notify:
            ctx.send(Command(domain="transfer", aggregate_id=t.transfer_id, type="Note"))
        ctx.schedule("reminder", after=60)
        return Transfer("withdrawing")

    @saga.on("Withdrawn")
    def withdrawn(state: Transfer, event: chronik.RecordedEvent, ctx: SagaContext) -> Transfer:
        w = registry.decode(event)
        ctx.send(
            Command(
                domain="account",
                aggregate_id="b",
                type="Deposit",
                payload={"amount": w.amount, "transfer_id": w.transfer_id},
            )
        )
        return Transfer("depositing")

    @saga.on("Deposited")
    def deposited(state: Transfer, event: chronik.RecordedEvent, ctx: SagaContext) -> Transfer:
        return Transfer("done")

    @saga.on_deadline("reminder")
    def remind(state: Transfer, event: chronik.RecordedEvent, ctx: SagaContext) -> Transfer:
        ctx.send(Command(domain="transfer", aggregate_id=ctx.instance_id, type="Remind"))
        return state

    @saga.on_rejected
    def failed(state: Transfer, command: Command, reason: str, ctx: SagaContext) -> Transfer:
        ctx.send(
            Command(
                domain="transfer",
                aggregate_id=ctx.instance_id,
                type="Fail",
                payload={"reason": reason},
            )
        )
        return Transfer("failed", reason)

    return saga


class Bank:
    """An app with accounts and transfers, the saga's runner, a manual clock and a scheduler."""

    def __init__(self, app: chronik.Chronik, clock: ManualClock) -> None:
        self.app, self.clock = app, clock
        self.store = app.store
        self.admin = ProjectionAdmin(app.store)
        self.runner: ProjectionRunner | None = None
        self.saga = money_transfer()
        self.sent: list[str] = []  # command ids that reached the command bus

    async def dispatch(self, command: Command) -> CommandResult:
        self.sent.append(command.command_id or "")
        return await self.app.dispatch(command)

    async def run(self, *projections: Projection) -> None:
        if self.runner is not None:
            await self.runner.stop()
        self.runner = ProjectionRunner(self.store, projections, heartbeat=0.05)
        await self.runner.start()

    async def settle(self) -> None:
        assert self.runner is not None
        for _ in range(3):  # the saga's commands, then the events they caused
            head = await self.store.head()
            assert head is not None
            async with asyncio.timeout(10):
                await self.runner.wait_for(head)

    async def do(self, domain: str, aggregate_id: str, type_: str, **payload: Any) -> None:
        await self.app.dispatch(
            Command(domain=domain, aggregate_id=aggregate_id, type=type_, payload=payload)
        )

    async def balance(self, account: str) -> int:
        return int(await self.app.load("account", account))

    async def events(self) -> list[tuple[str, str]]:
        return [(str(e.stream), e.type) async for e in self.store.read_all()]

    async def types(self, transfer: str) -> list[str]:
        stream = chronik.StreamId("transfer", transfer)
        return [e.type async for e in self.store.read_stream(stream)]

    async def instances(self) -> list[dict[str, Any]]:
        return await query(self.store, "money_transfer", "money_transfer_instances")

    async def rebuild(self, name: str = "money_transfer") -> None:
        before = (await self.admin.status(name)).generation
        await self.admin.request(name, "rebuild")
        async with asyncio.timeout(10):
            while True:
                now = await self.admin.status(name)
                if now.generation > before and now.building is None:
                    break
                await asyncio.sleep(0.01)
        await self.settle()

    async def fire(self) -> int:
        return await DeadlineScheduler(
            self.store, [self.saga], clock=self.clock, owner="bank"
        ).fire_due()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def bank(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bank]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")  # a real server, a fresh schema
    else:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/bank.db"
    app = chronik.Chronik(store=url, registry=registry)
    app.add_decider("account", account_decide, account_evolve, int)
    app.add_decider("transfer", transfer_decide, lambda s, e: s, dict)
    async with app:
        b = Bank(app, ManualClock())
        try:
            yield b
        finally:
            if b.runner is not None:
                await b.runner.stop()


async def _rejected_transfer_with_a_fired_reminder(bank: Bank) -> None:
    """Account a holds 100; transfer t1 of 999 is rejected and compensated; its reminder fires."""
    await bank.do("account", "a", "Open", balance=100)
    await bank.do("account", "b", "Open", balance=0)
    await bank.run(bank.saga.projection(bank.dispatch, bank.clock))
    await bank.do("transfer", "t1", "Request", source="a", target="b", amount=999)
    await bank.settle()
    bank.clock.advance(61)
    assert await bank.fire() == 1
    await bank.settle()
    assert await bank.types("t1") == ["TransferRequested", "TransferFailed", "Reminded"]


async def test_rebuilding_a_saga_twice_sends_nothing_again(bank: Bank) -> None:
    """A rejected withdrawal is not re-sent by a rebuild although the balance now suffices; its
    compensation is not repeated, the fired reminder does not fire again, the state is equal."""
    await _rejected_transfer_with_a_fired_reminder(bank)
    await bank.do("account", "a", "Deposit", amount=1000)
    state, history, sent = await bank.instances(), await bank.events(), list(bank.sent)
    for _ in range(2):
        await bank.rebuild()
        bank.clock.advance(3600)
        assert await bank.fire() == 0  # the re-armed reminder had already fired
        await bank.settle()
    assert bank.sent == sent  # nothing reached the command bus again
    assert await bank.events() == history
    assert await bank.balance("a") == 1100
    assert await bank.instances() == state
    assert msgspec.json.decode(state[0]["state"]) == {
        "status": "failed",
        "reason": "Insufficient funds",
    }
    record = await bank.store.read_table(RECORD.name, {"owner": "money_transfer"})
    assert sorted((r["command_id"].split(":", 3)[-1], r["outcome"]) for r in record) == [
        ("0", "accepted"),  # the reminder's Remind (its trigger is the fired deadline)
        ("0", "rejected"),  # the withdrawal, with its reason
        ("0:undo:0", "accepted"),  # the compensation
    ]
    assert "Insufficient funds" in {r["detail"] for r in record}


async def test_a_reset_to_the_start_replays_from_the_record(bank: Bank) -> None:
    """A reset of the saga in place re-runs its handlers on the record: nothing is sent."""
    await _rejected_transfer_with_a_fired_reminder(bank)
    await bank.do("account", "a", "Deposit", amount=1000)
    state, history, sent = await bank.instances(), await bank.events(), list(bank.sent)
    await bank.admin.request("money_transfer", "reset")
    async with asyncio.timeout(10):
        while await bank.admin.pending_for("money_transfer"):
            await asyncio.sleep(0.01)
    await bank.settle()
    assert bank.sent == sent
    assert await bank.events() == history
    assert await bank.instances() == state


async def test_new_saga_code_acts_only_on_events_after_the_switch(bank: Bank) -> None:
    """After deploying code that also sends Note, a rebuild sends no Note for the old transfer;
    a transfer requested after the switch gets both commands."""
    await _rejected_transfer_with_a_fired_reminder(bank)
    bank.saga = money_transfer(notify=True)
    await bank.run(bank.saga.projection(bank.dispatch, bank.clock))
    await bank.rebuild()
    assert await bank.types("t1") == ["TransferRequested", "TransferFailed", "Reminded"]
    await bank.do("account", "a", "Deposit", amount=1000)
    await bank.do("transfer", "t2", "Request", source="a", target="b", amount=10)
    await bank.settle()
    assert await bank.types("t2") == ["TransferRequested", "Noted"]
    assert await bank.balance("b") == 10


async def test_a_lost_reply_of_an_accepted_command_is_resolved_without_a_second_effect(
    bank: Bank,
) -> None:
    """The dispatch lands but its outcome is never recorded (failure injected in between): the
    retry finds the pending intent and re-sends the same command id, which changes nothing."""
    lost = [True]

    async def flaky(command: Command) -> CommandResult:
        result = await bank.dispatch(command)
        if lost[0] and command.type == "Withdraw":
            lost[0] = False
            raise ConnectionError("reply lost after the dispatch")
        return result

    await bank.do("account", "a", "Open", balance=100)
    await bank.do("account", "b", "Open", balance=0)
    await bank.run(money_transfer(policy=_FAST).projection(flaky, bank.clock))
    await bank.do("transfer", "t1", "Request", source="a", target="b", amount=30)
    await bank.settle()
    withdraw = bank.sent[0]
    assert bank.sent.count(withdraw) == 2  # sent twice with one id ...
    assert await bank.balance("a") == 70  # ... applied once
    assert await bank.balance("b") == 30
    record = await bank.store.read_table(RECORD.name, {"owner": "money_transfer"})
    assert {r["outcome"] for r in record} == {"accepted"}


async def test_a_lost_reply_of_a_rejected_command_runs_the_decision_again(bank: Bank) -> None:
    """The documented limit: a pending intent whose first attempt was rejected is decided again
    against today's state when it is resolved (here the balance rose in between)."""
    lost = [True]

    async def flaky(command: Command) -> CommandResult:
        if lost[0] and command.type == "Withdraw":
            lost[0] = False
            with pytest.raises(chronik.CommandRejected):
                await bank.dispatch(command)
            await bank.do("account", "a", "Deposit", amount=1000)
            raise ConnectionError("reply lost after the dispatch")
        return await bank.dispatch(command)

    await bank.do("account", "a", "Open", balance=100)
    await bank.do("account", "b", "Open", balance=0)
    await bank.run(money_transfer(policy=_FAST).projection(flaky, bank.clock))
    await bank.do("transfer", "t1", "Request", source="a", target="b", amount=999)
    await bank.settle()
    assert await bank.balance("a") == 101
    assert await bank.balance("b") == 999


async def test_a_reaction_rebuild_does_not_retry_a_rejected_command(bank: Bank) -> None:
    """A reaction's rejected withdrawal stays rejected through a rebuild, whatever the balance."""
    await bank.do("account", "a", "Open", balance=5)

    def react(event: chronik.RecordedEvent) -> list[Command]:
        t = event.json()
        payload = {"amount": t["amount"], "transfer_id": t["transfer_id"]}
        return [
            Command(domain="account", aggregate_id=t["source"], type="Withdraw", payload=payload)
        ]

    await bank.run(reaction("payout", ["TransferRequested"], react, bank.dispatch))
    await bank.do("transfer", "t1", "Request", source="a", target="b", amount=50)
    await bank.settle()
    await bank.do("account", "a", "Deposit", amount=100)
    sent = list(bank.sent)
    await bank.rebuild("payout")
    await bank.rebuild("payout")
    assert bank.sent == sent
    assert await bank.balance("a") == 105


def _refusing() -> Projection:
    emails = Projection("mailer", replay="refuse")

    @emails.on("TransferFailed")
    def mail(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        pass  # an email leaves the building: it cannot be sent twice

    return emails


async def test_a_projection_that_refuses_replay_refuses_rebuild_and_reset(bank: Bank) -> None:
    """Once it handled an event, its rebuild and reset are refused whole with a clear message;
    a reset past what it handled is allowed."""
    await bank.run(_refusing())
    await bank.do("transfer", "t1", "Fail", reason="x")
    await bank.settle()
    for action in ("rebuild", "reset"):
        with pytest.raises(ReplayRefused, match=f"{action} of mailer refused"):
            await bank.admin.request("mailer", action)
    assert not await bank.admin.pending_for("mailer")  # nothing queued
    head = await bank.store.head()
    assert await bank.admin.request("mailer", "reset", str(head))


async def test_http_answers_a_refused_rebuild_with_409(bank: Bank) -> None:
    """POST /v1/projections/NAME/rebuild on a refusing projection: 409 problem+json, message."""
    from chronik.server.http import create_http_app

    await bank.run(_refusing())
    await bank.do("transfer", "t1", "Fail", reason="x")
    await bank.settle()
    web = create_http_app(bank.app, runner=bank.runner, admin_writes=True)
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        r = await http.post("/v1/projections/mailer/rebuild")
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "rebuild of mailer refused" in r.text


def test_the_cli_reports_a_refused_rebuild(tmp_path: Path) -> None:
    """`chronik projections rebuild mailer` exits 1 with the refusal's message; nothing queued."""
    from typer.testing import CliRunner

    from chronik.cli import _build

    url = f"sqlite:///{tmp_path}/cli.db"

    async def handle_one() -> None:
        async with chronik.open_store(url) as store:
            r = await store.append(
                chronik.StreamId("transfer", "t1"), [chronik.EventData("TransferFailed", {})]
            )
            async with ProjectionRunner(store, [_refusing()], heartbeat=0.05) as run:
                await run.wait_for(r.position)

    asyncio.run(handle_one())
    result = CliRunner().invoke(_build(), ["projections", "rebuild", "mailer", "--store", url])
    assert result.exit_code == 1
    assert "rebuild of mailer refused" in " ".join(result.stderr.split())

    async def queued() -> bool:
        async with chronik.open_store(url) as store:
            return await ProjectionAdmin(store).pending_for("mailer")

    assert not asyncio.run(queued())
