"""The message transport conformance suite: the semantics every transport must meet.

Written once against the Transport port and run against every adapter with a real broker.
Subclass ``TransportConformance`` in a pytest module and provide ``make_transport``: an async
factory of opened transports that all talk to the same broker (accepting ``max_body_bytes``)::

    class TestMyTransport(TransportConformance):
        @pytest.fixture
        async def make_transport(self, my_broker_url):
            made = []
            async def make(**options):
                transport = await open_transport(my_broker_url, **options).open()
                made.append(transport)
                return transport
            yield make
            for transport in made:
                await transport.close()

Every test uses fresh topic names, so one broker serves the whole run. Waits are bounded and
nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chronik.errors import (
    InvalidMessage,
    PayloadTooLarge,
    TransportClosed,
    ValidationError,
)
from chronik.store import open_store
from chronik.store.base import UnitOfWork
from chronik.testing.transport_failures import TransportFailureConformance
from chronik.testing.transport_kit import (
    FAST,
    WAIT,
    Recorder,
    TransportFactory,
    eventually,
    fresh_name,
    msg,
)
from chronik.transports import Delivery, FailurePolicy, Message, StoreInbox, Transport

__all__ = ["Recorder", "TransportConformance", "TransportFactory", "eventually", "msg"]


class TransportConformance(TransportFailureConformance):
    """Subclass with a ``make_transport`` fixture; every test here must pass for the adapter."""

    @pytest.fixture
    def name(self) -> str:
        """A topic/queue name no other test uses."""
        return fresh_name()

    @pytest.fixture
    async def transport(self, make_transport: TransportFactory) -> Transport:
        return await make_transport()

    # --- the two patterns ----------------------------------------------------------------------

    async def test_fanout_reaches_every_group(self, transport: Transport, name: str) -> None:
        """publish/subscribe: each of two groups gets every message, in publish order."""
        a, b = Recorder(), Recorder()
        await transport.subscribe(name, "group-a", a)
        await transport.subscribe(name, "group-b", b)
        sent = [msg(name, i) for i in range(10)]
        for m in sent:
            await transport.publish(m)
        await eventually(lambda: len(a.got) >= 10 and len(b.got) >= 10, what="both groups")
        assert a.ids() == b.ids() == [m.id for m in sent]
        assert {d.group for d in a.got} == {"group-a"}

    async def test_competing_consumers_share_a_group(
        self, make_transport: TransportFactory, name: str
    ) -> None:
        """Two consumers of one group (on two connections) together get each message once."""
        one, two = await make_transport(), await make_transport()
        r1, r2 = Recorder(), Recorder()
        await one.subscribe(name, "workers", r1, prefetch=4)
        await two.subscribe(name, "workers", r2, prefetch=4)
        sent = [msg(name, i) for i in range(40)]
        for m in sent:
            await one.publish(m)
        await eventually(lambda: len(r1.got) + len(r2.got) >= 40, what="40 deliveries")
        await asyncio.sleep(0.2)  # room for a wrong extra delivery to show up
        assert sorted(r1.ids() + r2.ids()) == sorted(m.id for m in sent)

    async def test_send_listen_competing_consumers(
        self, make_transport: TransportFactory, name: str
    ) -> None:
        """send/listen: two listeners of a queue together get each message once."""
        one, two = await make_transport(), await make_transport()
        r1, r2 = Recorder(), Recorder()
        await one.listen(name, r1, prefetch=4)
        await two.listen(name, r2, prefetch=4)
        sent = [msg(name, i) for i in range(30)]
        for m in sent:
            await two.send(m)
        await eventually(lambda: len(r1.got) + len(r2.got) >= 30, what="30 deliveries")
        await asyncio.sleep(0.2)
        assert sorted(r1.ids() + r2.ids()) == sorted(m.id for m in sent)
        assert {d.group for d in r1.got + r2.got} == {""}

    async def test_queue_keeps_messages_until_a_listener_comes(
        self, transport: Transport, name: str
    ) -> None:
        """A message sent before anyone listens waits on the queue; headers and keys survive."""
        m = msg(name, 1, headers={"correlation-id": "c-1", "x-app": "ü ok"}, key="k-1")
        await transport.send(m)
        got = Recorder()
        await transport.listen(name, got)
        await eventually(lambda: bool(got.got), what="the queued message")
        assert got.got[0].message == m
        assert got.got[0].message.correlation_id == "c-1"

    # --- order and duplicates ------------------------------------------------------------------

    async def test_order_per_key_with_concurrency(self, transport: Transport, name: str) -> None:
        """Same-key messages are handled in publish order, also across a retry; keys are
        handled concurrently."""
        failed: set[str] = set()

        def fail_once_on_3(d: Delivery) -> bool:
            if d.body == b"3" and d.id not in failed:
                failed.add(d.id)
                return True
            return False

        got = Recorder(fail_once_on_3)
        await transport.subscribe(name, "ordered", got, policy=FAST, concurrency=4)
        sent = [msg(name, i, key=f"k{i % 3}") for i in range(30)]
        for m in sent:
            await transport.publish(m)
        await eventually(lambda: len(set(got.ids())) >= 30, what="30 messages")
        assert failed
        for k in ("k0", "k1", "k2"):
            handled = list(dict.fromkeys(d.id for d in got.got if d.key == k))
            assert handled == [m.id for m in sent if m.key == k]

    async def test_order_per_key_across_competing_consumers(
        self, make_transport: TransportFactory, name: str
    ) -> None:
        """Two consumers of a group share the messages, each handled once, same-key ones in
        order across both consumers where the transport promises it (``orders_across_consumers``:
        every adapter of chronik's), within each consumer otherwise."""
        one, two = await make_transport(), await make_transport()
        log: list[tuple[str, str, int]] = []  # (consumer, key, n)

        def handler(consumer: str) -> Any:
            async def handle(d: Delivery) -> None:
                log.append((consumer, d.key or "", int(d.body)))
                await asyncio.sleep(0.002)

            return handle

        await one.subscribe(name, "pair", handler("one"), concurrency=2)
        await two.subscribe(name, "pair", handler("two"), concurrency=2)
        for i in range(40):
            await one.publish(msg(name, i, key=f"k{i % 4}"))
        await eventually(lambda: len(log) >= 40, what="40 messages")
        assert sorted(n for _, _, n in log) == list(range(40))  # each once, none lost
        scopes = [None] if one.orders_across_consumers else ["one", "two"]
        for scope in scopes:
            for k in range(4):
                seen = [n for c, key, n in log if key == f"k{k}" and scope in (None, c)]
                assert seen == sorted(seen), (scope, k, seen)

    async def test_duplicate_publish_takes_effect_once(
        self, transport: Transport, name: str, tmp_path: Any
    ) -> None:
        """The same message id published twice: the broker drops the copy where it dedupes,
        and a StoreInbox makes the effect happen once either way."""
        got = Recorder()
        effects: list[str] = []
        async with open_store(f"sqlite:///{tmp_path}/inbox.db") as store:
            inbox = StoreInbox(store, "effects")

            async def effect(d: Delivery, unit: UnitOfWork) -> None:
                effects.append(d.id)

            handle = inbox.handler(effect)

            async def both(d: Delivery) -> None:
                await got(d)
                await handle(d)

            await transport.subscribe(name, "dedupe", both)
            dup, marker = msg(name, 1), msg(name, 2)
            await transport.publish(dup)
            await transport.publish(dup)
            await transport.publish(marker)
            await eventually(lambda: marker.id in got.ids(), what="the marker")
            await asyncio.sleep(0.1)
            if transport.dedupes:
                assert got.ids().count(dup.id) == 1
            assert effects == [dup.id, marker.id]
            assert await inbox.processed(dup.id)

    async def test_dedup_is_per_topic_and_queue_dead_letters_arrive(
        self, transport: Transport, name: str
    ) -> None:
        """One message id on two topics reaches both; a message that fails on a queue reaches
        that queue's dead-letter queue (ids are deduplicated per destination only)."""
        one, two, dead = Recorder(), Recorder(), Recorder()
        await transport.subscribe(f"{name}.one", "g", one)
        await transport.subscribe(f"{name}.two", "g", two)
        await transport.listen(f"{name}.q.dead", dead)
        await transport.listen(f"{name}.q", Recorder(lambda d: True), policy=FAST)
        shared = "shared-id-1"
        await transport.publish(msg(f"{name}.one", 1, id=shared))
        await transport.publish(msg(f"{name}.two", 2, id=shared))
        await transport.send(msg(f"{name}.q", 3, id=shared))
        await eventually(lambda: bool(one.got and two.got and dead.got), what="all three")
        assert one.ids() == two.ids() == dead.ids() == [shared]
        assert dead.got[0].headers["dead-topic"] == f"{name}.q"

    # --- bad input and lifecycle ---------------------------------------------------------------

    async def test_bad_input_is_refused_and_sends_nothing(
        self, make_transport: TransportFactory, name: str
    ) -> None:
        """Bad names, ids, headers, keys, bodies and options raise typed errors; nothing is
        delivered but the valid message sent afterwards."""
        transport = await make_transport(max_body_bytes=1024)
        got = Recorder()
        await transport.subscribe(name, "checks", got)
        bad: list[Any] = [
            Message(topic="Bad Topic", body=b"x"),
            Message(topic=f"{name}.*", body=b"x"),
            Message(topic=name, body=b"x", id="has space"),
            Message(topic=name, body=b"x", id=""),
            Message(topic=name, body="text", id="m-str"),  # type: ignore[arg-type]
            Message(topic=name, body=b"x", headers={"Upper": "v"}),
            Message(topic=name, body=b"x", headers={"ok": "line\nbreak"}),
            Message(topic=name, body=b"x", headers={"ok": 5}),  # type: ignore[dict-item]
            Message(topic=name, body=b"x", key=""),
            {"topic": name, "body": b"x"},
        ]
        for m in bad:
            with pytest.raises(InvalidMessage):
                await transport.publish(m)
            with pytest.raises(InvalidMessage):
                await transport.send(m)
        with pytest.raises(PayloadTooLarge):
            await transport.publish(Message(topic=name, body=b"x" * 1025))
        for call in (
            transport.subscribe(name, "Bad Group", got),
            transport.subscribe("bad..topic", "g", got),
            transport.listen(name, got, concurrency=0),
        ):
            with pytest.raises(ValidationError):
                await call
        with pytest.raises(ValidationError):
            FailurePolicy(retries=-1)
        ok = msg(name, 7)
        await transport.publish(ok)
        await eventually(lambda: bool(got.got), what="the valid message")
        await asyncio.sleep(0.1)
        assert got.ids() == [ok.id]

    async def test_group_outlives_its_consumers(
        self, make_transport: TransportFactory, name: str
    ) -> None:
        """Close and reconnect: a group keeps the messages published while no consumer ran,
        and a message in flight when its consumer stopped comes back."""
        first = await make_transport()
        blocked = asyncio.Event()

        async def hang(d: Delivery) -> None:
            blocked.set()
            await asyncio.Event().wait()

        consumer = await first.subscribe(name, "durable", hang)
        in_flight = msg(name, 0)
        await first.publish(in_flight)
        await asyncio.wait_for(blocked.wait(), WAIT)
        await consumer.stop()
        await first.close()
        assert repr(first).endswith("closed>")
        with pytest.raises(TransportClosed):
            await first.publish(msg(name, 9))
        publisher = await make_transport()
        later = [msg(name, i) for i in range(1, 6)]
        for m in later:
            await publisher.publish(m)
        got = Recorder()
        await (await make_transport()).subscribe(name, "durable", got)
        want = {in_flight.id} | {m.id for m in later}
        await eventually(lambda: set(got.ids()) >= want, what="the kept messages")
        assert next(d.attempt for d in got.got if d.id == in_flight.id) >= 1
