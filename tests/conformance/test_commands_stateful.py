"""A Hypothesis state machine of the command bus: two apps (two caches) on one store."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from typing import Any

import msgspec
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import chronik

registry = chronik.EventRegistry()


@registry.event()
class Deposited(msgspec.Struct):
    amount: int


class Deposit(msgspec.Struct):
    amount: int


class Account(msgspec.Struct):
    balance: int = 0
    deposits: int = 0


def decide(command: chronik.Command, state: Account) -> Deposited:
    return Deposited(command.payload.amount)


def evolve(state: Account, event: Deposited) -> Account:
    return Account(state.balance + event.amount, state.deposits + 1)


STREAM = chronik.StreamId("acct", "a1")


class BusMachine(RuleBasedStateMachine):
    """Deposits through either app, some with reused command ids, some racing each other."""

    url = "memory://"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.mkdtemp(prefix="chronik-bus-")
        self.store = chronik.open_store(self.url.replace("TMP", self.tmp))
        self.apps = [self._app(), self._app()]
        self.applied: dict[str, int] = {}  # command id -> the amount that took effect

    def _app(self) -> chronik.Chronik:
        app = chronik.Chronik(store=self.store, registry=registry)
        app.add_decider(
            "acct",
            decide,
            evolve,
            Account,
            commands={"Deposit": Deposit},
            snapshots=chronik.Snapshots(every=3),
        )
        return app

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _command(self, cid: int | None, amount: int) -> chronik.Command:
        return chronik.Command(
            domain="acct",
            aggregate_id="a1",
            type="Deposit",
            payload={"amount": amount},
            command_id=None if cid is None else f"c{cid}",
        )

    def _record(self, command: chronik.Command, result: chronik.CommandResult) -> None:
        amount = Deposited(**msgspec.json.decode(result.events[0].payload)).amount
        key = command.command_id or result.command_id
        assert self.applied.setdefault(key, amount) == amount  # a duplicate replays the first

    @rule(which=st.integers(0, 1), cid=st.none() | st.integers(0, 12), amount=st.integers(1, 99))
    def deposit(self, which: int, cid: int | None, amount: int) -> None:
        command = self._command(cid, amount)
        self._record(command, self.run(self.apps[which].dispatch(command)))

    @rule(
        cid=st.integers(0, 12),
        first=st.integers(1, 99),
        second=st.none() | st.integers(1, 99),  # None: the very same command, retried
    )
    def race(self, cid: int, first: int, second: int | None) -> None:
        commands = [self._command(cid, first), self._command(cid, second or first)]

        async def both() -> list[chronik.CommandResult]:
            pairs = zip(self.apps, commands, strict=True)
            return list(await asyncio.gather(*(app.dispatch(c) for app, c in pairs)))

        results = self.run(both())
        assert results[0].events == results[1].events  # one of them took effect, once
        self._record(commands[0], results[0])

    @rule(which=st.integers(0, 1))
    def drop_cache(self, which: int) -> None:
        self.apps[which].bus.repository.clear()

    @invariant()
    def caches_and_snapshots_agree_with_the_store(self) -> None:
        async def check() -> None:
            events = [e async for e in self.store.read_stream(STREAM)]
            assert len(events) == len(self.applied)
            for app in self.apps:
                await app.bus.repository.drain()
                cached = app.bus.repository._cache.get(STREAM)
                if cached is not None:  # a cached state is the replay up to its version
                    assert cached.version is not None
                    upto = [registry.decode(e) for e in events[: cached.version + 1]]
                    assert cached.state == Account(sum(e.amount for e in upto), len(upto))
            fresh = await self.apps[0].bus.repository.load(
                self.apps[0].bus.model("acct"), STREAM, use_cache=False
            )
            assert fresh.state == Account(sum(self.applied.values()), len(self.applied))

        self.run(check())

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class SQLiteBusMachine(BusMachine):
    """The same on SQLite, where appends wait for a group commit, so dispatches interleave."""

    url = "sqlite:///TMP/events.db"


TestBusMachine = BusMachine.TestCase
TestBusMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestSQLiteBusMachine = SQLiteBusMachine.TestCase
TestSQLiteBusMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
