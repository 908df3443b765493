"""Durable per-aggregate locks (chronik.DurableLock) on memory and SQLite: policy, queueing
across buses sharing a store, timeout, release on every exit, renewal, takeover and the sweep."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import chronik
from chronik import Command, CommandBus, EventStore, StreamId
from chronik.aggregate_lock_sweep import (
    Claim,
    LockSweeper,
    claim,
    delete_claimed,
    find_expired,
    sweep_locks,
)
from chronik.aggregate_locks import LOCK_NAME, lock_key
from chronik.server.config import Config, build_app
from chronik.store.base import Lease

registry = chronik.EventRegistry()


@registry.event()
class Added(msgspec.Struct):
    n: int


class Calls:
    """What the logic saw: decide calls per command id, and how many ran at once. The logic
    is slow through a handler middleware (``around``): chronik's decide functions are sync."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: collections.Counter[str] = collections.Counter()
        self.active = 0
        self.most = 0
        self.started = asyncio.Event()

    def decide(self, command: Command, state: dict[str, Any]) -> list[Any]:
        self.calls[command.command_id or ""] += 1
        if command.payload.get("fail") == "reject":
            raise chronik.CommandRejected("no")
        if command.payload.get("fail") == "raise":
            raise RuntimeError("boom")
        return [Added(command.payload.get("n", 1))]

    async def around(self, command: Command, state: Any, call_next: Any) -> list[Any]:
        self.active += 1
        self.most = max(self.most, self.active)
        self.started.set()
        try:
            await asyncio.sleep(command.payload.get("sleep", self.delay))
            result: list[Any] = await call_next(command, state)
            return result
        finally:
            self.active -= 1

    def model(self, domain: str = "counter") -> chronik.Decider:
        return chronik.Decider(domain, self.decide, evolve, dict)


def evolve(state: dict[str, Any], event: Added) -> dict[str, Any]:
    return {"count": state.get("count", 0) + 1, "total": state.get("total", 0) + event.n}


#: a module-level model for the server configuration test (``domains: [module:object]``)
counter = Calls().model()
STREAM = StreamId("counter", "c1")


def cmd(command_id: str | None = None, aggregate_id: str = "c1", **payload: Any) -> Command:
    return Command(
        domain="counter",
        aggregate_id=aggregate_id,
        type="Add",
        payload=payload,
        command_id=command_id,
    )


@pytest.fixture(params=["memory", "sqlite"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[EventStore, EventStore]]:
    """Two handles on one store: the same memory store twice, or two opens of one SQLite file
    (as two processes have)."""
    if request.param == "memory":
        store = chronik.open_store("memory://")
        async with store:
            yield store, store
    else:
        url = f"sqlite:///{tmp_path}/locks.db"
        async with chronik.open_store(url) as one, chronik.open_store(url) as two:
            yield one, two


def bus(store: EventStore, calls: Calls, lock: chronik.DurableLock | None) -> CommandBus:
    made = CommandBus(store, registry)
    made.register(calls.model(), lock=lock)
    made.use_handler(calls.around)
    return made


async def holder(store: EventStore) -> Lease | None:
    name, partition = lock_key(STREAM)
    found = [x for x in await store.read_leases(name) if x.partition == partition]
    return found[0] if found else None


# --- the policy and the key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"ttl": 0}, "ttl"),
        ({"ttl": -1.0}, "ttl"),
        ({"ttl": float("nan")}, "ttl"),
        ({"ttl": float("inf")}, "ttl"),
        ({"ttl": "30"}, "ttl"),
        ({"ttl": True}, "ttl"),
        ({"wait": -0.5}, "wait"),
        ({"wait": float("nan")}, "wait"),
        ({"wait": None}, "wait"),
    ],
)
def test_a_bad_policy_is_a_configuration_error_naming_the_field(
    options: dict[str, Any], field: str
) -> None:
    """DurableLock refuses a ttl or wait that is not a finite, positive number of seconds."""
    with pytest.raises(chronik.ConfigurationError, match=rf"DurableLock\.{field}"):
        chronik.DurableLock(**options)


def test_the_policy_defaults_and_accepts_whole_seconds() -> None:
    """The defaults are ttl 30 s and wait 10 s; ints are seconds too; the policy is frozen."""
    assert (chronik.DurableLock().ttl, chronik.DurableLock().wait) == (30.0, 10.0)
    policy = chronik.DurableLock(ttl=5, wait=0)
    assert (policy.ttl, policy.wait) == (5, 0)
    with pytest.raises(AttributeError):
        policy.ttl = 1  # type: ignore[misc]


def test_the_lock_key_is_stable_and_fits_any_aggregate_id() -> None:
    """One lease name; the partition is a fixed 63-bit hash of tenant, domain and id (pinned:
    processes of different versions must agree), for ids of any allowed length."""
    assert lock_key(StreamId("orders", "o-1")) == (LOCK_NAME, 5071032991303806028)
    longest = StreamId("d" * 64, "x" * 256, "t" * 64)
    name, partition = lock_key(longest)
    assert name == LOCK_NAME and 0 <= partition < 2**63
    keys = {
        lock_key(StreamId("orders", "o-1"))[1],
        lock_key(StreamId("orders", "o-1", "acme"))[1],
        lock_key(StreamId("order", "so-1"))[1],
        lock_key(StreamId("orders", "o-2"))[1],
    }
    assert len(keys) == 4


async def test_only_aggregate_domains_on_stores_with_leases_take_a_lock() -> None:
    """A DcbDecider domain (its boundary is a query) and a non-policy value are refused with
    ConfigurationError; the domain is then not registered."""
    app = chronik.Chronik(store="memory://", registry=registry)
    dcb = chronik.DcbDecider(
        "courses",
        query=lambda command: chronik.Query.of(types=["x.y"]),
        decide=lambda command, state: [],
        evolve=lambda state, event: state,
    )
    with pytest.raises(chronik.ConfigurationError, match="DcbDecider"):
        app.add_model(dcb, lock=chronik.DurableLock())
    with pytest.raises(chronik.ConfigurationError, match="DurableLock"):
        app.add_model(Calls().model(), lock={"ttl": 3})  # type: ignore[arg-type]
    assert app.bus.domains == []
    app.add_model(Calls().model(), lock=chronik.DurableLock(ttl=3))
    assert app.bus.locks.policies == {"counter": chronik.DurableLock(ttl=3)}


# --- queueing ---------------------------------------------------------------------------------


async def _race(stores: tuple[EventStore, EventStore], lock: chronik.DurableLock | None) -> Calls:
    calls = Calls(delay=0.02)
    one, two = bus(stores[0], calls, lock), bus(stores[1], calls, lock)
    commands = [(one if i % 2 else two, cmd(f"k{i}", n=i)) for i in range(10)]
    await asyncio.gather(*(b.dispatch(c) for b, c in commands))
    await one.close()
    await two.close()
    return calls


async def test_commands_on_one_aggregate_queue_across_buses_sharing_a_store(
    stores: tuple[EventStore, EventStore],
) -> None:
    """With the lock, two buses on one store never run the logic at once: each command is
    decided exactly once (no conflict, no retry) and applied once."""
    calls = await _race(stores, chronik.DurableLock(ttl=5, wait=10))
    assert calls.most == 1
    assert calls.calls == {f"k{i}": 1 for i in range(10)}
    events = [e async for e in stores[0].read_stream(STREAM)]
    assert sorted(e.json()["n"] for e in events) == list(range(10))
    assert (await holder(stores[0])) is not None and not (await holder(stores[0])).valid()


async def test_without_the_lock_the_same_workload_retries(
    stores: tuple[EventStore, EventStore],
) -> None:
    """The control: without the lock the two buses race, so some commands are decided more
    than once (the queueing test above can fail)."""
    calls = await _race(stores, None)
    assert calls.most == 2
    assert sum(calls.calls.values()) > 10
    assert await holder(stores[0]) is None


# --- waiting, timeout, takeover ---------------------------------------------------------------


async def test_a_lock_held_past_wait_is_a_lock_timeout_and_the_logic_never_runs(
    stores: tuple[EventStore, EventStore],
) -> None:
    """While another owner holds the lease, a command waits ``wait`` s, then LockTimeout (a
    ConcurrencyError naming the stream); its logic never ran and nothing is left held."""
    name, partition = lock_key(STREAM)
    await stores[1].acquire_lease(name, "someone", 30.0, partition)
    calls = Calls()
    b = bus(stores[0], calls, chronik.DurableLock(ttl=5, wait=0.3))
    started = time.monotonic()
    with pytest.raises(chronik.LockTimeout, match="counter/c1") as caught:
        await b.dispatch(cmd("late"))
    assert 0.3 <= time.monotonic() - started < 1.5
    assert isinstance(caught.value, chronik.ConcurrencyError)
    assert (caught.value.stream, caught.value.wait) == (STREAM, 0.3)
    assert calls.calls == {} and len(b.locks) == 0
    lease = await holder(stores[0])
    assert lease is not None and (lease.owner, lease.epoch) == ("someone", 1)


async def test_a_dead_holders_lease_is_taken_over_after_its_ttl(
    stores: tuple[EventStore, EventStore],
) -> None:
    """A holder that never releases (killed) blocks the aggregate until its ttl ends; then
    the waiting command takes the lease over (epoch 2) and runs."""
    name, partition = lock_key(STREAM)
    await stores[1].acquire_lease(name, "killed", 0.4, partition)
    calls = Calls(delay=0.3)
    b = bus(stores[0], calls, chronik.DurableLock(ttl=5, wait=5))
    started = time.monotonic()
    task = asyncio.create_task(b.dispatch(cmd("after")))
    await calls.started.wait()
    assert time.monotonic() - started >= 0.35
    lease = await holder(stores[0])
    assert lease is not None and lease.epoch == 2 and lease.owner != "killed" and lease.valid()
    assert (await task).version == 0
    await b.close()


# --- release on every exit ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fail", "error"), [("reject", chronik.CommandRejected), ("raise", chronik.HandlerError)]
)
async def test_the_lock_is_released_after_a_rejection_or_an_exception(
    stores: tuple[EventStore, EventStore], fail: str, error: type[Exception]
) -> None:
    """A rejected or failing command gives its lease up at once: another bus takes the lock
    without waiting (wait=0)."""
    policy = chronik.DurableLock(ttl=30, wait=0)
    one, two = bus(stores[0], Calls(), policy), bus(stores[1], Calls(), policy)
    with pytest.raises(error):
        await one.dispatch(cmd("bad", fail=fail))
    lease = await holder(stores[0])
    assert lease is not None and not lease.valid()
    assert (await two.dispatch(cmd("good"))).version == 0
    assert len(one.locks) == 0 and len(two.locks) == 0


async def test_the_lock_is_released_when_the_command_is_cancelled(
    stores: tuple[EventStore, EventStore],
) -> None:
    """Cancelling a command inside its logic releases its lease; a command cancelled while it
    waits for the lock leaves nothing held either."""
    policy = chronik.DurableLock(ttl=30, wait=5)
    calls = Calls()
    one, two = bus(stores[0], calls, policy), bus(stores[1], Calls(), policy)
    running = asyncio.create_task(one.dispatch(cmd("slow", sleep=30)))
    await calls.started.wait()
    waiting = asyncio.create_task(two.dispatch(cmd("waiting")))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await asyncio.sleep(0.05)  # the release runs to its end in the background
    lease = await holder(stores[0])
    assert lease is not None and not lease.valid()
    immediate = bus(stores[1], Calls(), chronik.DurableLock(ttl=30, wait=0))
    assert (await immediate.dispatch(cmd("next"))).version == 0
    assert len(one.locks) == len(two.locks) == 0


# --- renewal ------------------------------------------------------------------------------------


async def test_renewal_keeps_a_long_commands_lock(
    stores: tuple[EventStore, EventStore], caplog: pytest.LogCaptureFixture
) -> None:
    """A command running for several ttls keeps its lease (renewed every ttl/3, same epoch):
    another bus times out instead of taking it over, and no warning is logged."""
    policy = chronik.DurableLock(ttl=0.6, wait=1.5)
    calls = Calls()
    one, two = bus(stores[0], calls, policy), bus(stores[1], Calls(), policy)
    with caplog.at_level(logging.WARNING, "chronik.locks"):
        long = asyncio.create_task(one.dispatch(cmd("long", sleep=2.5)))
        await calls.started.wait()
        with pytest.raises(chronik.LockTimeout):
            await two.dispatch(cmd("blocked"))
        lease = await holder(stores[0])
        assert lease is not None and lease.epoch == 1 and lease.valid()
        assert (await long).version == 0
    assert caplog.records == []


async def test_a_renewal_that_finds_the_lease_lost_logs_a_warning(
    stores: tuple[EventStore, EventStore], caplog: pytest.LogCaptureFixture
) -> None:
    """When the lease is taken from a running command (here: released under it and taken by
    another owner), its next renewal logs a warning; the append is still guarded by the
    stream version, so the command still completes once."""
    name, partition = lock_key(STREAM)
    calls = Calls()
    one = bus(stores[0], calls, chronik.DurableLock(ttl=0.3, wait=1))
    with caplog.at_level(logging.WARNING, "chronik.locks"):
        running = asyncio.create_task(one.dispatch(cmd("robbed", sleep=0.5)))
        await calls.started.wait()
        lease = await holder(stores[1])
        assert lease is not None
        await stores[1].release_lease(name, lease.owner, partition)
        await stores[1].acquire_lease(name, "thief", 30.0, partition)
        assert (await running).version == 0
    assert any("another holder took it" in r.getMessage() for r in caplog.records)
    assert calls.calls == {"robbed": 1}
    lease = await holder(stores[1])
    assert lease is not None and lease.owner == "thief" and lease.valid()


# --- the sweep ----------------------------------------------------------------------------------


async def test_the_sweep_deletes_ended_lock_rows_and_keeps_held_ones(
    stores: tuple[EventStore, EventStore],
) -> None:
    """Released lock rows go; a held lock, a lock that ended within the grace period and other
    leases stay."""
    store = stores[0]
    policy = chronik.DurableLock(ttl=30, wait=1)
    b = bus(store, Calls(), policy)
    for i in range(5):
        await b.dispatch(cmd(f"s{i}", aggregate_id=f"agg-{i}"))
    name, held = lock_key(StreamId("counter", "busy"))
    await store.acquire_lease(name, "busy-owner", 30.0, held)
    await store.acquire_lease("projection.x", "worker", 0.01)
    assert len(await store.read_leases(LOCK_NAME)) == 6
    assert await sweep_locks(store, grace=3600) == 5  # released rows ended "long ago"
    assert [x.partition for x in await store.read_leases(LOCK_NAME)] == [held]
    _, short = lock_key(StreamId("counter", "short"))
    await store.acquire_lease(name, "gone", 0.05, short)
    await asyncio.sleep(0.1)
    assert await sweep_locks(store, grace=60) == 0  # expired, but within the grace period
    assert await sweep_locks(store, grace=0, batch=1) == 1
    assert [x.partition for x in await store.read_leases(LOCK_NAME)] == [held]
    assert len(await store.read_leases("projection.x")) == 1


async def test_a_lease_acquired_after_the_sweep_read_it_is_never_deleted(
    stores: tuple[EventStore, EventStore],
) -> None:
    """Forced race: the sweep reads a row as expired, then a command acquires that lock,
    then the sweep claims and deletes: the claim is refused, the new holder's row stays."""
    store, other = stores
    name, partition = lock_key(STREAM)
    await store.acquire_lease(name, "old", 0.05, partition)
    await asyncio.sleep(0.1)
    found = await find_expired(store, grace=0)
    assert found == [partition]
    await other.acquire_lease(name, "new", 30.0, partition)  # between the read and the delete
    claimed = await claim(store, found)
    assert claimed.partitions == ()
    assert await delete_claimed(store, claimed) == 0
    lease = await holder(store)
    assert lease is not None and (lease.owner, lease.epoch) == ("new", 2) and lease.valid()


async def test_a_claim_that_may_have_lapsed_is_released_not_deleted(
    stores: tuple[EventStore, EventStore],
) -> None:
    """Forced race: the sweeper's own claim lapses before its delete and a command takes the
    lock: the delete does not happen and the command's lease stays held."""
    store, other = stores
    name, partition = lock_key(STREAM)
    await store.acquire_lease(name, "old", 0.01, partition)
    await asyncio.sleep(0.05)
    claimed = await claim(store, [partition], hold=0.05)
    assert claimed.partitions == (partition,)
    await asyncio.sleep(0.1)
    await other.acquire_lease(name, "new", 30.0, partition)
    assert await delete_claimed(store, claimed) == 0
    lease = await holder(store)
    assert lease is not None and lease.owner == "new" and lease.valid()
    with pytest.raises(chronik.LeaseHeld):
        await store.acquire_lease(name, "third", 1.0, partition)


async def test_the_sql_delete_is_conditioned_on_the_sweepers_ownership(tmp_path: Path) -> None:
    """On SQLite the delete matches the sweeper as owner: a fresh claim whose row another
    owner holds (as after a lapse) deletes nothing."""
    async with chronik.open_store(f"sqlite:///{tmp_path}/cond.db") as store:
        name, partition = lock_key(STREAM)
        await store.acquire_lease(name, "holder", 30.0, partition)
        forged = Claim("sweep@elsewhere", (partition,), time.monotonic(), 10.0)
        assert await delete_claimed(store, forged) == 1  # asked to delete one row ...
        lease = await holder(store)
        assert lease is not None and lease.owner == "holder"  # ... which was not the sweeper's


async def test_the_app_runs_a_supervised_sweeper_when_a_domain_opted_in(tmp_path: Path) -> None:
    """An app with a locked domain runs the 'aggregate lock sweeper' task (health shows it);
    one without locks does not; the sweeper deletes released rows."""
    app = chronik.Chronik(store=f"sqlite:///{tmp_path}/app.db", registry=registry)
    app.add_model(Calls().model(), lock=chronik.DurableLock(ttl=5, wait=1))
    async with app:
        assert app.health.tasks["aggregate lock sweeper"].state == "running"
        assert isinstance(app.lock_sweeper, LockSweeper)
        await app.dispatch(cmd("one"))
        sweeper = LockSweeper(app.store, grace=0, interval=0.05)
        assert await sweeper.sweep() == 1 and sweeper.swept == 1
    assert app.lock_sweeper is None
    plain = chronik.Chronik(store="memory://", registry=registry)
    plain.add_model(Calls().model())
    async with plain:
        assert "aggregate lock sweeper" not in plain.health.tasks


# --- configuration ----------------------------------------------------------------------------


def test_the_server_config_locks_a_domain() -> None:
    """``locks: {domain: {ttl, wait}}`` gives a configured domain its durable lock; an unknown
    domain, an unknown key or a bad ttl is a ConfigurationError."""
    spec = f"{__name__}:counter"
    config = msgspec.convert({"domains": [spec], "locks": {"counter": {"ttl": 7}}}, Config)
    app = build_app(config, "memory://")
    assert app.bus.locks.policies == {"counter": chronik.DurableLock(ttl=7, wait=10)}
    unknown = msgspec.convert({"domains": [spec], "locks": {"orders": {}}}, Config)
    with pytest.raises(chronik.ConfigurationError, match="orders"):
        build_app(unknown, "memory://")
    bad = msgspec.convert({"domains": [spec], "locks": {"counter": {"ttl": -1}}}, Config)
    with pytest.raises(chronik.ConfigurationError, match=r"DurableLock\.ttl"):
        build_app(bad, "memory://")
    with pytest.raises(msgspec.ValidationError, match="ttls"):
        msgspec.convert({"locks": {"counter": {"ttls": 1}}}, Config)


async def test_a_locked_command_never_decides_on_a_stale_cached_state(
    stores: tuple[EventStore, EventStore],
) -> None:
    """Buses taking turns on one aggregate: each one's cached state is stale when it gets the
    lock, so a locked command loads afresh and is still decided exactly once."""
    calls = Calls()
    policy = chronik.DurableLock(ttl=5, wait=5)
    one, two = bus(stores[0], calls, policy), bus(stores[1], calls, policy)
    for i in range(6):
        await (one if i % 2 else two).dispatch(cmd(f"t{i}", n=i))
    assert calls.calls == {f"t{i}": 1 for i in range(6)}
    assert (await one.dispatch(cmd("last"))).version == 6
