"""kafka:// dead letters against a real Kafka-protocol broker (Tansu): the claim protocol of
``chronik.transports.kafka_dead_letters`` across processes and after a crash.

Two transports stand for two processes (each has its own settled-marker cache and lock). A
crashed retry is written as the marker it would have left in the settled topic.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from chronik.errors import InvalidMessage, NotFound
from chronik.testing.transport_kit import Recorder, eventually, fresh_name
from chronik.transports import Message, Transport, open_transport
from chronik.transports.kafka import KafkaTransport
from chronik.transports.kafka_dead_letters import CLAIM_LEASE, settled_topic

QUIET = 0.5  # how long a group is watched for a second delivery


@pytest.fixture
async def pair(kafka_url: str) -> AsyncIterator[tuple[KafkaTransport, KafkaTransport]]:
    """Two transports on one broker: two processes."""
    one = await open_transport(kafka_url).open()
    two = await open_transport(kafka_url).open()
    assert isinstance(one, KafkaTransport) and isinstance(two, KafkaTransport)
    yield one, two
    await one.close()
    await two.close()


async def _letters(t: Transport, topic: str, count: int) -> str:
    """``count`` dead letters of group ``g`` of ``topic`` (bodies 0..count-1); the queue."""
    dlq = f"{topic}.g.dead"
    for n in range(count):
        headers = {"dead-topic": topic, "dead-group": "g", "dead-reason": "test"}
        body = str(n).encode()
        await t._send_dead_letter(Message(topic=dlq, body=body, id=f"m{n}", headers=headers))
    return dlq


async def _claim(t: KafkaTransport, dlq: str, letter: str, at: float, release: bool) -> None:
    """Write what a retry that claimed ``letter`` at ``at`` and then crashed (or, with
    ``release``, gave up) leaves in the settled topic."""
    topic = settled_topic(t, dlq)
    await t.ensure_topic(topic)
    claim = uuid.uuid4().hex
    kinds = ["claim", "release"] if release else ["claim"]
    for kind in kinds:
        marker = {"kind": kind, "letter": letter, "claim": claim, "action": "retry", "at": at}
        value = json.dumps(marker).encode()
        await t.producer().send_and_wait(topic, value, key=letter.encode(), partition=0)


async def test_concurrent_retries_of_two_processes_deliver_once(
    pair: tuple[KafkaTransport, KafkaTransport],
) -> None:
    """Two processes retrying one letter at once: the first claim in the log wins, the other
    is NotFound, the group gets the message once, and both then list it as gone."""
    one, two = pair
    topic = fresh_name()
    got = Recorder()
    await one.subscribe(topic, "g", got)
    dlq = await _letters(one, topic, 2)
    first, second = await one.dead_letters(dlq)
    assert [d.id for d in await two.dead_letters(dlq)] == [first.id, second.id]
    outcomes = await asyncio.gather(
        one.retry(dlq, first.id), two.retry(dlq, first.id), return_exceptions=True
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["DeadLetter", "NotFound"]
    await eventually(lambda: len(got.got) == 1, what="the retried message")
    await asyncio.sleep(QUIET)
    assert [d.id for d in got.got] == ["m0"]
    for t in pair:
        assert [d.id for d in await t.dead_letters(dlq)] == [second.id]
        with pytest.raises(NotFound):
            await t.inspect(dlq, first.id)


async def test_a_crashed_claim_holds_until_its_lease_ends(
    pair: tuple[KafkaTransport, KafkaTransport],
) -> None:
    """A letter claimed by a retry that crashed stays listed and cannot be retried or dropped
    during the lease; an expired or released claim lets a retry deliver it."""
    one, two = pair
    topic = fresh_name()
    got = Recorder()
    await one.subscribe(topic, "g", got)
    dlq = await _letters(one, topic, 3)
    fresh, expired, released = (d.id for d in await one.dead_letters(dlq))
    now = time.time()
    await _claim(two, dlq, fresh, now, release=False)
    await _claim(two, dlq, expired, now - CLAIM_LEASE - 1, release=False)
    await _claim(two, dlq, released, now, release=True)
    assert [d.id for d in await one.dead_letters(dlq)] == [fresh, expired, released]
    for call in (one.retry, one.drop):
        with pytest.raises(NotFound):
            await call(dlq, fresh)
    await one.retry(dlq, expired)
    await one.retry(dlq, released)
    await eventually(lambda: len(got.got) == 2, what="the retried messages")
    assert sorted(d.id for d in got.got) == ["m1", "m2"]
    assert [d.id for d in await two.dead_letters(dlq)] == [fresh]


async def test_browsing_creates_no_topic(pair: tuple[KafkaTransport, KafkaTransport]) -> None:
    """Listing and inspecting a dead-letter queue that does not exist creates no topic."""
    one, _ = pair
    dlq = f"{fresh_name()}.g.dead"
    assert await one.dead_letters(dlq) == []
    with pytest.raises(NotFound):
        await one.inspect(dlq, "0:0")
    assert one._admin is not None
    names = await one._admin.list_topics()
    assert one.topic("queue", dlq) not in names and settled_topic(one, dlq) not in names


async def test_an_id_is_partition_colon_offset(
    pair: tuple[KafkaTransport, KafkaTransport],
) -> None:
    """An id that is not ``partition:offset`` is InvalidMessage naming the field."""
    one, _ = pair
    for bad, field in (("12", "id"), ("a:1", "id"), ("1:x", "id"), ("0-1", "after")):
        with pytest.raises(InvalidMessage) as err:
            if field == "after":
                await one.dead_letters("q.dead", after=bad)
            else:
                await one.inspect("q.dead", bad)
        assert err.value.field == field
