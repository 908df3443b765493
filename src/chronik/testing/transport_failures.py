"""Transport conformance, the failure half: retries, dead letters, park, stop, graceful stop.

Part of ``TransportConformance`` (``chronik.testing.transport_conformance``), which every
adapter's suite subclasses; these cases need its ``transport``, ``make_transport`` and ``name``
fixtures. Imports pytest, ``chronik.errors``, ``chronik.transports`` and
``chronik.testing.transport_kit``.
"""

from __future__ import annotations

import asyncio

import pytest

from chronik.errors import ConsumerStopped
from chronik.testing.transport_kit import (
    FAST,
    WAIT,
    Recorder,
    TransportFactory,
    eventually,
    msg,
)
from chronik.transports import Delivery, FailurePolicy, Transport

__all__ = ["TransportFailureConformance"]


class TransportFailureConformance:
    """What a failing handler leads to, the same on every adapter."""

    # --- failures ------------------------------------------------------------------------------

    async def test_failed_handler_gets_the_message_again(
        self, transport: Transport, name: str
    ) -> None:
        """A handler that fails once sees the message again (attempt 2) and it is then acked."""
        seen: set[str] = set()

        def fail_first(d: Delivery) -> bool:
            first = d.id not in seen
            seen.add(d.id)
            return first

        got = Recorder(fail_first)
        consumer = await transport.subscribe(name, "retry", got, policy=FAST)
        m = msg(name, 1)
        await transport.publish(m)
        await eventually(lambda: consumer.acked == 1, what="the ack")
        assert [(d.id, d.attempt) for d in got.got] == [(m.id, 1), (m.id, 2)]

    async def test_poison_message_is_dead_lettered_without_blocking(
        self, transport: Transport, name: str
    ) -> None:
        """After retries the poison message goes to the dead-letter queue; other keys, unkeyed
        messages and later messages of its own key are all handled."""
        poison = msg(name, 0, key="a")
        got = Recorder(lambda d: d.id == poison.id)
        dead = Recorder()
        await transport.listen(f"{name}.dlq-test", dead)
        await transport.subscribe(
            name, "main", got, policy=FAST, concurrency=4, dead_letter_queue=f"{name}.dlq-test"
        )
        others = [msg(name, i, key=k) for i, k in enumerate(["b", None, "a", "b", None], 1)]
        await transport.publish(poison)
        for m in others:
            await transport.publish(m)
        await eventually(lambda: bool(dead.got), what="the dead letter")
        await eventually(lambda: set(got.ids()) >= {m.id for m in others}, what="the others")
        assert got.ids().count(poison.id) == 3  # 1 + 2 retries, then no more
        letter = dead.got[0]
        assert letter.id == poison.id and letter.body == poison.body
        assert letter.headers["dead-topic"] == name and letter.headers["dead-group"] == "main"
        assert letter.headers["dead-attempts"] == "3"
        assert "RuntimeError" in letter.headers["dead-reason"]
        later_a = got.ids().index(others[2].id)
        assert later_a > max(i for i, x in enumerate(got.ids()) if x == poison.id)

    async def test_park_sets_aside_the_rest_of_the_key(
        self, transport: Transport, name: str
    ) -> None:
        """Policy park: the failing message and the later messages of its key are dead-lettered
        in order; other keys go on."""
        first = msg(name, 0, key="p")
        got = Recorder(lambda d: d.id == first.id)
        dead = Recorder()
        await transport.listen(f"{name}.parked", dead)
        policy = FailurePolicy(retries=1, backoff=0.01, then="park")
        await transport.subscribe(name, "g", got, policy=policy, dead_letter_queue=f"{name}.parked")
        later, other = msg(name, 1, key="p"), msg(name, 2, key="q")
        for m in (first, later, other):
            await transport.publish(m)
        await eventually(lambda: len(dead.got) >= 2 and other.id in got.ids(), what="parking")
        assert dead.ids() == [first.id, later.id]
        assert later.id not in got.ids()
        assert dead.got[1].headers["dead-reason"].startswith("parked")

    async def test_stop_policy_stops_and_keeps_the_message(
        self, make_transport: TransportFactory, name: str
    ) -> None:
        """Policy stop: the consumer stops with ConsumerStopped; the message is not lost."""
        transport = await make_transport()
        policy = FailurePolicy(retries=0, then="stop")
        consumer = await transport.listen(name, Recorder(lambda d: True), policy=policy)
        m = msg(name, 1)
        await transport.send(m)
        with pytest.raises(ConsumerStopped):
            await asyncio.wait_for(consumer.wait(), WAIT)
        assert not consumer.running
        got = Recorder()
        await (await make_transport()).listen(name, got)
        await eventually(lambda: bool(got.got), what="the kept message")
        assert got.ids() == [m.id]

    async def test_stop_with_grace_lets_running_handlers_finish(
        self, transport: Transport, name: str
    ) -> None:
        """consumer.stop(grace=...) waits for the running handler, which then acks."""
        started, finished = asyncio.Event(), asyncio.Event()

        async def slow(d: Delivery) -> None:
            started.set()
            await asyncio.sleep(0.2)
            finished.set()

        consumer = await transport.listen(name, slow)
        await transport.send(msg(name, 1))
        await asyncio.wait_for(started.wait(), WAIT)
        await consumer.stop(grace=WAIT)
        assert finished.is_set() and consumer.acked == 1 and not consumer.running
