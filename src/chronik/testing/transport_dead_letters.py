"""Conformance of the transport dead-letter port: list, inspect, retry and drop.

Subclass ``TransportDeadLetterConformance`` with the same ``make_transport`` fixture as
``chronik.testing.transport_conformance.TransportConformance``. Each test makes a consumer
give up on some messages, then works on its dead-letter queue through the port only: browsing
consumes nothing, a retry reaches the original group alone (other groups of the topic never
see the message again) exactly once, and a retried or dropped letter is a ``NotFound``.
Imports pytest and ``chronik.transports`` (and the suite's kit) only.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from chronik.errors import InvalidMessage, NotFound
from chronik.testing.transport_kit import FAST, Recorder, TransportFactory, eventually, msg
from chronik.testing.transport_kit import fresh_name as _fresh
from chronik.transports import Delivery, Transport
from chronik.transports.consumer import Consumer

__all__ = ["TransportDeadLetterConformance"]

QUIET = 0.5  # how long a group that must not get a message is watched


class _Switch:
    """A handler that fails on chosen bodies until it is switched off."""

    def __init__(self, bodies: set[bytes]) -> None:
        self.bodies = bodies
        self.recorder = Recorder(lambda d: d.body in self.bodies)

    async def __call__(self, delivery: Delivery) -> None:
        await self.recorder(delivery)

    def heal(self) -> None:
        self.bodies = set()

    def times(self, body: bytes) -> int:
        return sum(1 for d in self.recorder.got if d.body == body)


async def _dead(consumer: Consumer, count: int) -> None:
    await eventually(lambda: consumer.dead_lettered >= count, what="dead-lettered")


class TransportDeadLetterConformance:
    """Subclass with a ``make_transport`` fixture; every test here must pass for the adapter."""

    @pytest.fixture
    def name(self) -> str:
        """A topic/queue name no other test uses."""
        return _fresh()

    @pytest.fixture
    async def transport(self, make_transport: TransportFactory) -> Transport:
        return await make_transport()

    async def _two_groups(
        self, transport: Transport, name: str, failing: set[bytes], count: int = 3
    ) -> tuple[_Switch, Recorder, Consumer]:
        a, b = _Switch(failing), Recorder()
        consumer = await transport.subscribe(name, "group-a", a, policy=FAST)
        await transport.subscribe(name, "group-b", b, policy=FAST)
        for i in range(count):
            await transport.publish(msg(name, i, headers={"trace": f"t{i}"}, key=f"k{i}"))
        await _dead(consumer, len(failing))
        await eventually(lambda: len(b.got) >= count, what="group b")
        return a, b, consumer

    async def test_dead_letters_are_listed_without_being_consumed(
        self, transport: Transport, name: str
    ) -> None:
        """A page shows each dead letter's origin, reason, attempts, time and a preview,
        oldest first, pages with ``after``, and browsing twice shows the same letters."""
        before = time.time()
        await self._two_groups(transport, name, {b"0", b"2"})
        dlq = f"{name}.group-a.dead"
        letters = await transport.dead_letters(dlq)
        assert [d.preview for d in letters] == ["0", "2"]
        first = letters[0]
        assert (first.queue, first.topic, first.group) == (dlq, name, "group-a")
        assert "RuntimeError" in first.reason and first.attempts == FAST.retries + 1
        assert first.at is not None and before - 1 <= first.at <= time.time() + 1
        assert first.headers == {"trace": "t0"} and first.key == "k0"
        assert first.size == 1 and first.body is None and first.message_id
        assert await transport.dead_letters(dlq) == letters  # nothing was consumed
        page = await transport.dead_letters(dlq, limit=1)
        assert [d.id for d in page] == [first.id]
        rest = await transport.dead_letters(dlq, limit=5, after=page[0].id)
        assert [d.preview for d in rest] == ["2"]
        assert await transport.dead_letters(f"{name}.group-b.dead") == []

    async def test_inspect_gives_the_whole_body(self, transport: Transport, name: str) -> None:
        """inspect returns one letter with its body; an id not in the queue is NotFound."""
        await self._two_groups(transport, name, {b"1"})
        dlq = f"{name}.group-a.dead"
        (letter,) = await transport.dead_letters(dlq)
        full = await transport.inspect(dlq, letter.id)
        assert full.body == b"1" and full.id == letter.id and full.message_id == letter.message_id
        with pytest.raises(NotFound):
            await transport.inspect(f"{name}.other.dead", letter.id)

    async def test_retry_reaches_the_original_group_only_and_once(
        self, transport: Transport, name: str
    ) -> None:
        """A retried letter is handled again by its group, never by the topic's other groups,
        leaves the queue, and a second (or concurrent) retry is NotFound."""
        a, b, _ = await self._two_groups(transport, name, {b"1"})
        dlq = f"{name}.group-a.dead"
        (letter,) = await transport.dead_letters(dlq)
        seen_by_b = len(b.got)
        a.heal()
        outcomes = await asyncio.gather(
            transport.retry(dlq, letter.id, by="conformance"),
            transport.retry(dlq, letter.id, by="conformance"),
            return_exceptions=True,
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["DeadLetter", "NotFound"]
        await eventually(lambda: a.times(b"1") == FAST.retries + 2, what="the retried message")
        handled = next(d for d in reversed(a.recorder.got) if d.body == b"1")
        assert handled.id == letter.message_id and handled.group == "group-a"
        assert handled.headers == {"trace": "t1"} and handled.key == "k1"
        await asyncio.sleep(QUIET)
        assert len(b.got) == seen_by_b and a.times(b"1") == FAST.retries + 2
        assert await transport.dead_letters(dlq) == []
        with pytest.raises(NotFound):
            await transport.retry(dlq, letter.id)
        with pytest.raises(NotFound):
            await transport.drop(dlq, letter.id)

    async def test_drop_removes_a_letter_for_good(self, transport: Transport, name: str) -> None:
        """A dropped letter is gone from the queue and never redelivered; again is NotFound."""
        a, _, _ = await self._two_groups(transport, name, {b"0", b"1"})
        dlq = f"{name}.group-a.dead"
        first, second = await transport.dead_letters(dlq)
        dropped = await transport.drop(dlq, first.id, by="conformance")
        assert dropped.message_id == first.message_id and dropped.body == b"0"
        assert [d.id for d in await transport.dead_letters(dlq)] == [second.id]
        for again in (transport.drop, transport.retry, transport.inspect):
            with pytest.raises(NotFound):
                await again(dlq, first.id)
        a.heal()
        await asyncio.sleep(QUIET)
        assert a.times(b"0") == FAST.retries + 1

    async def test_a_queue_letter_goes_back_on_its_queue(
        self, transport: Transport, name: str
    ) -> None:
        """send/listen: a retried dead letter is delivered on its queue again."""
        worker = _Switch({b"7"})
        consumer = await transport.listen(name, worker, policy=FAST)
        await transport.send(msg(name, 7))
        await _dead(consumer, 1)
        dlq = f"{name}.dead"
        (letter,) = await transport.dead_letters(dlq)
        assert (letter.topic, letter.group) == (name, "")
        worker.heal()
        await transport.retry(dlq, letter.id)
        await eventually(lambda: worker.times(b"7") == FAST.retries + 2, what="the retry")
        assert await transport.dead_letters(dlq) == []

    async def test_bad_input_names_the_field(self, transport: Transport) -> None:
        """A bad queue name, limit or id is InvalidMessage naming the field."""
        cases = [
            (transport.dead_letters("Not A Queue"), "queue"),
            (transport.dead_letters("fine.dead", limit=0), "limit"),
            (transport.dead_letters("fine.dead", after="../x"), "after"),
            (transport.inspect("fine.dead", ""), "id"),
            (transport.retry("fine.dead", "a b"), "id"),
        ]
        for call, field in cases:
            with pytest.raises(InvalidMessage) as err:
                await call
            assert err.value.field == field
