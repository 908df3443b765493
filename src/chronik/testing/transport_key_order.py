"""Transport conformance, per-key order across the competing consumers of a group.

The contract, the same on every adapter (memory, PostgreSQL, NATS JetStream, RabbitMQ):

- Messages of one key, published one after the other, are handled in publish order by the
  group as a whole, whichever of its consumers gets them: a message of a key is first handed
  to a handler only once the key's previous message is *finished* (its handler returned, or
  the failure policy gave up on it: dead-lettered or parked). So no message is acked before
  an earlier one of its key was handled.
- A retry keeps the message's place: the key's later messages wait through its backoff.
- A consumer that stops (or dies: its connection drops, its lease or ack wait runs out) gives
  its unfinished messages back; the group's next consumer of the key starts with the first of
  them, never with a later one. Such a message may be handled twice (at least once: an inbox
  makes the effect happen once), so order is judged on the first time each message is handed
  to a handler.
- Keys are independent and unkeyed messages are never ordered.

``key_order_violations`` checks a log of handler events against that contract; the crash drill
(``tests/integration/test_transport_key_order.py``) uses it on logs written by several
processes. ``TransportKeyOrderConformance`` holds every adapter to it in one process. Imports
pytest, ``chronik.transports`` and ``chronik.testing.transport_kit``.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import pytest

from chronik.testing.transport_kit import (
    WAIT,
    Recorder,
    TransportFactory,
    eventually,
    msg,
)
from chronik.transports import Delivery, FailurePolicy, Message

__all__ = ["Event", "KeyOrderLog", "TransportKeyOrderConformance", "key_order_violations"]

#: (what, who, key, n): ``start`` (a handler got message ``n`` of ``key``), ``done`` (it
#: returned), ``fail`` (it raised and will be retried), ``gave_up`` (it raised for the last
#: time: dead-lettered or parked), ``killed`` (consumer ``who`` died: its running handlers
#: end; key and n unused).
Event = tuple[Literal["start", "done", "fail", "gave_up", "killed"], str, str, int]


def key_order_violations(
    events: Iterable[Event], published: Mapping[str, Sequence[int]]
) -> list[str]:
    """What in ``events`` (in the order they happened) breaks per-key order, given the
    message numbers ``published`` per key in publish order; empty if nothing does."""
    wrong: list[str] = []
    position = {key: {n: i for i, n in enumerate(ns)} for key, ns in published.items()}
    first_seen: dict[str, list[int]] = {key: [] for key in published}
    running: Counter[tuple[str, str, int]] = Counter()  # (who, key, n) -> handlers running
    finished: set[tuple[str, int]] = set()
    for what, who, key, n in events:
        if what == "killed":
            for item in [item for item in running if item[0] == who]:
                del running[item]
            continue
        if key not in position or n not in position[key]:
            wrong.append(f"{what} of unknown message {key}/{n}")
            continue
        if what != "start":
            running[who, key, n] -= 1
            if what in ("done", "gave_up"):
                finished.add((key, n))
            continue
        running[who, key, n] += 1
        seen = first_seen[key]
        if n in seen:
            continue  # a redelivery: order is judged on first deliveries
        index = position[key][n]
        if index != len(seen):
            expected = published[key][len(seen)]
            wrong.append(f"key {key}: {n} handed out first while {expected} was due")
        elif index > 0:
            before = published[key][index - 1]
            busy = [w for (w, k, m), c in running.items() if k == key and m == before and c > 0]
            if (key, before) not in finished or busy:
                wrong.append(f"key {key}: {n} handed out before {before} was finished")
        seen.append(n)
    for key, ns in published.items():
        if first_seen[key] != list(ns)[: len(first_seen[key])]:
            wrong.append(f"key {key}: first deliveries {first_seen[key]} not in publish order")
    return wrong


class KeyOrderLog:
    """Handlers that log ``Event``s for ``key_order_violations``, with a seeded chance of
    failing a message's first attempt and of a short sleep."""

    def __init__(self, seed: int, fail_rate: float = 0.0, retries: int = 1000) -> None:
        self.events: list[Event] = []
        self.random = random.Random(seed)
        self.fail_rate = fail_rate
        self.retries = retries
        self.handled: set[str] = set()
        self.fail: Callable[[Delivery], bool] = lambda d: False

    def handler(self, who: str) -> Callable[[Delivery], Any]:
        async def handle(d: Delivery) -> None:
            key, n = d.key or "", int(d.body)
            self.events.append(("start", who, key, n))
            await asyncio.sleep(self.random.random() * 0.003)
            first = d.attempt == 1 and self.random.random() < self.fail_rate
            if first or self.fail(d):
                last = d.attempt >= self.retries + 1
                self.events.append(("gave_up" if last else "fail", who, key, n))
                raise RuntimeError(f"refused {d.id}")
            self.events.append(("done", who, key, n))
            self.handled.add(d.id)

        return handle


class TransportKeyOrderConformance:
    """Per-key order across competing consumers; needs ``make_transport`` and ``name``."""

    @pytest.mark.parametrize("pattern", ["publish", "send"])
    async def test_keys_stay_in_order_across_competing_consumers(
        self, make_transport: TransportFactory, name: str, pattern: str
    ) -> None:
        """Three consumers of a group (or listeners of a queue; concurrency 3, retries after
        failed first attempts) hand out each key's messages one after the other, in publish
        order; unkeyed messages and other keys go on meanwhile."""
        log = KeyOrderLog(seed=19, fail_rate=0.15)
        policy = FailurePolicy(retries=5, backoff=0.005, backoff_max=0.02)
        transports = [await make_transport() for _ in range(3)]
        for i, transport in enumerate(transports):
            handler = log.handler(f"c{i}")
            if pattern == "publish":
                await transport.subscribe(
                    name, "ordered", handler, policy=policy, concurrency=3, prefetch=8
                )
            else:
                await transport.listen(name, handler, policy=policy, concurrency=3, prefetch=8)
        sent: list[Message] = []
        published: dict[str, list[int]] = {}
        for n in range(90):
            key = None if n % 10 == 9 else f"k{n % 7}"
            sent.append(msg(name, n, key=key))
            if key is not None:
                published.setdefault(key, []).append(n)
        for m in sent:
            await (transports[0].publish if pattern == "publish" else transports[0].send)(m)
        await eventually(lambda: log.handled >= {m.id for m in sent}, what="every message")
        keyed = [e for e in log.events if e[2]]
        assert key_order_violations(keyed, published) == []
        assert any(e[0] == "fail" for e in log.events)  # retries did happen

    async def test_stopped_consumer_hands_its_key_over_in_order(
        self, make_transport: TransportFactory, name: str
    ) -> None:
        """A consumer stopped while it holds a key's message gives it back; the group's other
        consumer then starts the key with that message, and goes on in order."""
        first_t, second_t = await make_transport(), await make_transport()
        holding = asyncio.Event()
        log = KeyOrderLog(seed=1)

        async def hold(d: Delivery) -> None:
            log.events.append(("start", "first", d.key or "", int(d.body)))
            holding.set()
            await asyncio.Event().wait()

        first = await first_t.subscribe(name, "handover", hold)
        sent = [msg(name, n, key="held") for n in range(6)]
        await first_t.publish(sent[0])
        await asyncio.wait_for(holding.wait(), WAIT)
        await second_t.subscribe(name, "handover", log.handler("second"), concurrency=2)
        for m in sent[1:]:
            await first_t.publish(m)
        await asyncio.sleep(0.3)  # room for a later message to reach the second consumer early
        assert [e[3] for e in log.events if e[1] == "second"] == []
        await first.stop()
        log.events.append(("killed", "first", "", 0))
        await eventually(lambda: log.handled >= {m.id for m in sent}, what="the handover")
        assert key_order_violations(log.events, {"held": range(6)}) == []
        assert next(e[3] for e in log.events if e[1] == "second" and e[0] == "start") == 0

    async def test_dead_lettered_message_finishes_its_turn(
        self, make_transport: TransportFactory, name: str
    ) -> None:
        """A poison message is retried in its place (the key's next message waits through
        the backoff on every consumer), dead-lettered, and then the key goes on in order."""
        log = KeyOrderLog(seed=2, retries=2)
        log.fail = lambda d: d.body == b"1"
        dead = Recorder()
        policy = FailurePolicy(retries=2, backoff=0.05, backoff_max=0.1)
        transports = [await make_transport() for _ in range(2)]
        await transports[0].listen(f"{name}.dead-order", dead)
        for i, transport in enumerate(transports):
            await transport.subscribe(
                name,
                "poisoned",
                log.handler(f"c{i}"),
                policy=policy,
                concurrency=2,
                dead_letter_queue=f"{name}.dead-order",
            )
        sent = [msg(name, n, key="p") for n in range(5)]
        for m in sent:
            await transports[1].publish(m)
        want = {m.id for m in sent if m.body != b"1"}
        await eventually(lambda: log.handled >= want and bool(dead.got), what="the key")
        assert key_order_violations(log.events, {"p": range(5)}) == []
        assert [e[0] for e in log.events if e[3] == 1] == ["start", "fail"] * 2 + [
            "start",
            "gave_up",
        ]
        assert dead.ids() == [sent[1].id]

    async def test_park_holds_the_key_across_consumers(
        self, make_transport: TransportFactory, name: str
    ) -> None:
        """Policy park on two consumers: once one parks a key, the key's later messages are
        dead-lettered in order by whichever consumer gets them, never handled; other keys go
        on; when the parking consumer stops, its park ends."""
        log = KeyOrderLog(seed=3, retries=1)
        log.fail = lambda d: d.body == b"0"
        dead = Recorder()
        policy = FailurePolicy(retries=1, backoff=0.01, then="park")
        transports = [await make_transport() for _ in range(3)]
        await transports[2].listen(f"{name}.parked", dead)
        consumers = [
            await t.subscribe(
                name,
                "parking",
                log.handler(f"c{i}"),
                policy=policy,
                concurrency=2,
                dead_letter_queue=f"{name}.parked",
            )
            for i, t in enumerate(transports[:2])
        ]
        first = msg(name, 0, key="p")
        await transports[2].publish(first)
        await eventually(lambda: dead.ids() == [first.id], what="the park")
        parker = next(int(e[1][1]) for e in log.events if e[0] == "gave_up")
        later = [msg(name, n, key="p") for n in range(1, 6)]
        others = [msg(name, n, key=f"q{n}") for n in range(6, 12)]
        for m in [x for pair in zip(later, others, strict=False) for x in pair] + others[5:]:
            await transports[2].publish(m)
        await eventually(lambda: len(dead.got) >= 6, what="the parked messages")
        await eventually(lambda: log.handled >= {m.id for m in others}, what="the other keys")
        assert dead.ids() == [first.id] + [m.id for m in later]
        assert all(d.headers["dead-reason"].startswith("parked") for d in dead.got[1:])
        assert not any(e[2] == "p" and e[3] > 0 for e in log.events)  # none handled
        await consumers[parker].stop()
        after = msg(name, 20, key="p")
        await transports[2].publish(after)
        await eventually(lambda: after.id in log.handled, what="the key after the park")
        assert len(dead.got) == 6
