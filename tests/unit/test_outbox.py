"""The outbox: recorded with the events, published after, marked done only once confirmed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest

import chronik
import chronik.outbox as outbox_module
from chronik.outbox import OutboxAdmin, OutboxDispatcher, record
from chronik.store.base import EventStore, TableWrite, UnitOfWork
from chronik.transports import open_transport
from chronik.transports.base import Transport
from chronik.transports.memory import MemoryTransport
from chronik.transports.message import Delivery, Message

S = chronik.StreamId("customer", "c1")


def msg(n: int, key: str | None = None) -> Message:
    return Message(
        topic="customer.registered",
        body=b'{"n": %d}' % n,
        id=f"m-{n}",
        headers={"correlation-id": "req-1"},
        key=key,
    )


class Flaky(MemoryTransport):
    """A memory transport whose first ``failures`` publishes fail."""

    def __init__(self, failures: int) -> None:
        super().__init__("memory://")
        self.failures = failures

    async def _publish(self, message: Message) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise chronik.ChronikError("broker unavailable")
        await super()._publish(message)


@pytest.fixture
async def store() -> AsyncIterator[EventStore]:
    async with chronik.open_store("memory://") as s:
        yield s


async def collect(transport: Transport, into: list[Delivery]) -> None:
    async def handle(delivery: Delivery) -> None:
        into.append(delivery)

    await transport.subscribe("customer.registered", "notifications", handle)


async def until(check: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_messages_commit_with_the_unit_or_not_at_all(store: EventStore) -> None:
    """A recorded message exists only if its unit of work committed."""
    async with store.transaction() as tx:
        tx.append(S, [chronik.EventData("CustomerCreated", {})], chronik.NO_STREAM)
        record(tx, msg(1))
    with pytest.raises(chronik.WrongExpectedVersion):
        async with store.transaction() as tx:
            tx.append(S, [chronik.EventData("CustomerCreated", {})], chronik.NO_STREAM)
            record(tx, msg(2))
    assert [m["id"] for m in await OutboxAdmin(store).messages()] == ["m-1"]
    with pytest.raises(chronik.ValidationError):
        async with store.transaction() as tx:
            record(tx, Message(topic="Not A Topic!", body=b""))


async def test_dispatcher_publishes_in_order_and_marks_done(store: EventStore) -> None:
    """Messages reach the transport in creation order, with their ids and headers."""
    for n in range(5):
        async with store.transaction() as tx:
            record(tx, msg(n))
    got: list[Delivery] = []
    async with open_transport("memory://") as transport:
        await collect(transport, got)
        async with OutboxDispatcher(store, transport, poll_interval=0.01) as dispatcher:
            await until(lambda: len(got) == 5)
            assert dispatcher.active
        assert [d.id for d in got] == [f"m-{n}" for n in range(5)]
        assert got[0].message.headers == {"correlation-id": "req-1"}
    status = await OutboxAdmin(store).status()
    assert (status.pending, status.done, status.failed) == (0, 5, 0)


async def test_failures_back_off_then_fail_and_can_be_retried_or_dropped(
    store: EventStore,
) -> None:
    """A failing publish is retried with backoff, marked failed at the limit, then retried."""
    async with store.transaction() as tx:
        record(tx, msg(1, key="c1"))
        record(tx, msg(2, key="c2"))  # another key: it does not wait for m-1
    transport = Flaky(failures=4)
    got: list[Delivery] = []
    async with transport:
        await collect(transport, got)
        dispatcher = OutboxDispatcher(store, transport, max_attempts=2, backoff=0.0)
        await dispatcher.dispatch_once()  # both fail once
        await dispatcher.dispatch_once()  # both fail again: failed
        admin = OutboxAdmin(store)
        failed = await admin.messages("failed")
        assert [(m["id"], m["attempts"]) for m in failed] == [("m-1", 2), ("m-2", 2)]
        assert "broker unavailable" in failed[0]["last_error"]
        assert await dispatcher.dispatch_once() == 0  # failed messages are left alone
        assert await admin.retry("m-1") == 1
        assert await admin.drop() == 1  # the remaining failed one, m-2
        assert await dispatcher.dispatch_once() == 1
        await until(lambda: len(got) == 1)
        assert [d.id for d in got] == ["m-1"]
        with pytest.raises(chronik.ValidationError):
            await admin.retry("m-9")
    status = await admin.status()
    assert (status.pending, status.done, status.failed) == (0, 1, 0)


async def test_one_dispatcher_at_a_time_and_failover(store: EventStore) -> None:
    """Two dispatchers: one holds the lease; when it dies the other takes over."""
    for n in range(3):
        async with store.transaction() as tx:
            record(tx, msg(n))
    got: list[Delivery] = []
    async with open_transport("memory://") as transport:
        await collect(transport, got)
        first = OutboxDispatcher(store, transport, owner="a", lease_ttl=0.3, poll_interval=0.01)
        second = OutboxDispatcher(store, transport, owner="b", lease_ttl=0.3, poll_interval=0.01)
        assert await first.dispatch_once() == 3
        assert await second.dispatch_once() == 0 and not second.active
        assert (await OutboxAdmin(store).status()).dispatcher == "a"
        async with store.transaction() as tx:
            record(tx, msg(3))
        # "a" dies without giving up its lease; "b" waits for it to expire, then sends
        await second.start()
        await until(lambda: len(got) == 4)
        assert second.active and second.sent == 1
        await second.stop()
    assert [d.id for d in got] == ["m-0", "m-1", "m-2", "m-3"]


async def test_commands_record_integration_messages_with_their_events() -> None:
    """An outbox rule's messages commit with the command's events, never for a rejection,
    and once per command id."""
    import msgspec

    registry = chronik.EventRegistry()

    @registry.event()
    class Registered(msgspec.Struct):
        name: str

    def decide(command: chronik.Command, state: dict[str, str]) -> Registered:
        if state:
            raise chronik.CommandRejected("exists")
        return Registered(command.payload["name"])

    app = chronik.Chronik(store="memory://", registry=registry)
    app.add_decider("customer", decide, lambda s, e: {"name": e.name}, dict)
    app.add_outbox(
        lambda event, data, stream: (
            Message(topic="customer.registered", id=data.event_id, body=msgspec.json.encode(event))
            if isinstance(event, Registered)
            else None
        )
    )
    create = chronik.Command(
        domain="customer",
        aggregate_id="c1",
        type="Register",
        payload={"name": "Ada"},
        command_id="r-1",
    )
    async with app:
        result = await app.dispatch(create)
        await app.dispatch(create)  # the same command id: nothing new
        with pytest.raises(chronik.CommandRejected):
            await app.dispatch(msgspec.structs.replace(create, command_id="r-2"))
        rows = await OutboxAdmin(app.store).messages()
        assert [r["id"] for r in rows] == [result.events[0].event_id]
        assert rows[0]["body"] == '{"name":"Ada"}' and rows[0]["state"] == "pending"


class _Writes:
    """Collects what ``record`` adds to a unit of work."""

    def __init__(self) -> None:
        self.writes: list[TableWrite] = []

    def write_tables(self, writes: list[TableWrite]) -> None:
        self.writes.extend(writes)


async def test_recording_creates_nothing_and_every_store_has_the_table(store: EventStore) -> None:
    """record() adds one row write and no DDL; a fresh store already has the outbox table."""
    unit = _Writes()
    record(cast(UnitOfWork, unit), msg(1))
    assert [w.op for w in unit.writes] == ["upsert"]
    assert await store.read_table("outbox_messages") == []
    assert (await OutboxAdmin(store).status()).pending == 0


class FailOnce(MemoryTransport):
    """A memory transport that fails the first publish of each id in ``ids``."""

    def __init__(self, *ids: str) -> None:
        super().__init__("memory://")
        self.ids = set(ids)

    async def _publish(self, message: Message) -> None:
        if message.id in self.ids:
            self.ids.discard(message.id)
            raise chronik.ChronikError("broker unavailable")
        await super()._publish(message)


async def test_a_key_waits_for_its_message_in_backoff_other_keys_do_not(store: EventStore) -> None:
    """A message backing off holds back the later messages of its key, not of other keys."""
    async with store.transaction() as tx:
        record(tx, msg(1, key="a"))
        record(tx, msg(2, key="b"))
        record(tx, msg(3, key="a"))
    got: list[Delivery] = []
    async with FailOnce("m-1") as transport:
        await collect(transport, got)
        dispatcher = OutboxDispatcher(store, transport, backoff=0.3)
        assert await dispatcher.dispatch_once() == 2  # m-1 failed, m-2 sent, m-3 not tried
        assert await dispatcher.dispatch_once() == 0  # m-1 backs off: m-3 still waits
        await until(lambda: len(got) == 1)
        await asyncio.sleep(0.35)
        assert await dispatcher.dispatch_once() == 2
        await until(lambda: len(got) == 3)
    assert [d.id for d in got] == ["m-2", "m-1", "m-3"]


@pytest.mark.parametrize("action", ["retry", "drop"])
async def test_a_failed_message_blocks_its_key_until_retried_or_dropped(
    store: EventStore, action: str
) -> None:
    """A failed message holds its key's later messages back, says so in status and list, and
    releases them (in order) when retried or dropped."""
    async with store.transaction() as tx:
        record(tx, msg(1, key="a"))
        record(tx, msg(2, key="a"))
        record(tx, msg(3, key="b"))
    got: list[Delivery] = []
    async with FailOnce("m-1") as transport:
        await collect(transport, got)
        dispatcher = OutboxDispatcher(store, transport, max_attempts=1)
        await dispatcher.dispatch_once()
        assert await dispatcher.dispatch_once() == 0
        admin = OutboxAdmin(store)
        status = await admin.status()
        assert (status.pending, status.failed, status.done) == (1, 1, 1)
        assert (status.blocked, status.blocked_keys) == (1, ["key a"])
        rows = {r["id"]: r for r in await admin.messages()}
        assert rows["m-2"]["blocked_by"] == "m-1" and rows["m-3"]["blocked_by"] is None
        assert await (admin.retry("m-1") if action == "retry" else admin.drop("m-1")) == 1
        assert await dispatcher.dispatch_once() == (2 if action == "retry" else 1)
        await until(lambda: len(got) == (3 if action == "retry" else 2))
        assert (await admin.status()).blocked_keys == []
    want = ["m-3", "m-1", "m-2"] if action == "retry" else ["m-3", "m-2"]
    assert [d.id for d in got] == want


async def test_a_blocked_key_with_a_long_backlog_does_not_starve_other_keys(
    store: EventStore,
) -> None:
    """More messages queued behind a failed one than a dispatch window holds do not keep a
    later message of another key from going out."""
    async with store.transaction() as tx:
        for n in range(1, 31):
            record(tx, msg(n, key="a"))
        record(tx, msg(99, key="b"))
    got: list[Delivery] = []
    async with FailOnce("m-1") as transport:
        await collect(transport, got)
        dispatcher = OutboxDispatcher(store, transport, max_attempts=1, batch_size=2)
        await dispatcher.dispatch_once()  # m-1 fails: key a is blocked behind it
        await dispatcher.dispatch_once()
        await until(lambda: len(got) == 1)
    assert [d.id for d in got] == ["m-99"]


async def test_messages_keep_the_recorded_order_when_the_clock_stalls_or_steps_back(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages recorded while the wall clock stands still or steps back (NTP) go out in the
    order they were recorded, whatever their ids."""
    ticks = iter(range(10**15, 0, -1000))  # each reading a microsecond earlier than the last
    monkeypatch.setattr(outbox_module.time, "time_ns", lambda: next(ticks))
    ids = [f"z-{99 - n:02d}" for n in range(20)]  # ids sort opposite to the recording order
    async with store.transaction() as tx:
        for i in ids:
            record(tx, Message(topic="customer.registered", body=b"{}", id=i, key="k"))
    monkeypatch.undo()
    got: list[Delivery] = []
    async with open_transport("memory://") as transport:
        await collect(transport, got)
        await OutboxDispatcher(store, transport).dispatch_once()
        await until(lambda: len(got) == 20)
    assert [d.id for d in got] == ids
