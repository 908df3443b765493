"""kafka:// against a real Kafka-protocol broker (Tansu): a killed member, a broker restart,
topic names and bad options.

Tansu keeps everything in memory here, so a broker restart loses every message and offset:
the restart test proves reconnection and TransportUnavailable during the outage, not
durability (a real Kafka keeps the messages across a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest

import chronik
from chronik.errors import ConfigurationError, TransportUnavailable
from chronik.testing.kafka_server import KafkaService
from chronik.testing.service_base import ServiceNotStarted, free_port, unavailable
from chronik.testing.transport_kit import Recorder, eventually, msg
from chronik.transports import open_transport
from chronik.transports.kafka import MAX_TOPIC, kafka_topic

CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    import chronik
    from chronik.transports import StoreInbox, open_transport

    async def main(kafka, store_url, topic, who):
        async with chronik.open_store(store_url) as store, open_transport(kafka) as t:
            inbox = StoreInbox(store, "workers")

            async def effect(d, unit):
                data = {"n": int(d.body), "id": d.id, "who": who}
                unit.append(chronik.StreamId("kafka", d.key), [
                    chronik.EventData("kafka.handled", data)])

            handle = inbox.handler(effect)

            async def handler(d):
                print("start", d.id, flush=True)
                await asyncio.sleep(0.02)
                await handle(d)

            await t.subscribe(topic, "workers", handler, concurrency=4)
            print("ready", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main(*sys.argv[1:]))
    """
)


class _Member:
    """A consumer process whose stdout lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode().strip())

    def starts(self) -> list[str]:
        return [line.split()[1] for line in self.lines if line.startswith("start ")]


async def _member(kafka_url: str, store_url: str, topic: str, who: str) -> _Member:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CONSUMER,
        kafka_url,
        store_url,
        topic,
        who,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    member = _Member(proc)
    await eventually(lambda: "ready" in member.lines, 60, f"member {who} ready")
    return member


async def test_killed_member_partitions_move_in_order_and_deduped(
    kafka_url: str, postgres_url: str
) -> None:
    """Two member processes of one group; one is SIGKILLed mid-work: its partitions move to
    the other, nothing is lost, each key's effects are in publish order, and redeliveries of
    messages the dead member had handled are skipped by the StoreInbox."""
    topic = f"kill.t{os.urandom(3).hex()}"
    a = await _member(kafka_url, postgres_url, topic, "a")
    b = await _member(kafka_url, postgres_url, topic, "b")
    keys = [f"k{i}" for i in range(8)]
    sent = [msg(topic, n, key=keys[n % len(keys)]) for n in range(240)]
    try:
        async with open_transport(kafka_url) as transport:
            for m in sent:
                await transport.publish(m)
            await eventually(lambda: len(a.starts()) >= 20 and len(b.starts()) >= 20, 60)
            a.proc.send_signal(signal.SIGKILL)
            await a.proc.wait()
        async with chronik.open_store(postgres_url) as store:

            async def handled() -> dict[str, list[int]]:
                out: dict[str, list[int]] = {}
                for key in keys:
                    stream = chronik.StreamId("kafka", key)
                    out[key] = [json.loads(e.payload)["n"] async for e in store.read_stream(stream)]
                return out

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90
            effects = await handled()
            while sum(map(len, effects.values())) < len(sent) and loop.time() < deadline:
                await asyncio.sleep(0.5)
                effects = await handled()
            for key in keys:  # every message once, in publish order per key
                assert effects[key] == [int(m.body) for m in sent if m.key == key], key
        assert len(effects) == len(keys)
        redelivered = set(a.starts()) & set(b.starts())
        assert redelivered, "the killed member had messages in hand: they must come again"
    finally:
        for member in (a, b):
            if member.proc.returncode is None:
                member.proc.kill()
                await member.proc.wait()
            member.reader.cancel()


@pytest.fixture
async def own_broker() -> AsyncIterator[KafkaService]:
    """A broker of this test alone (it gets killed and restarted)."""
    service = KafkaService()
    try:
        service.start()
    except ServiceNotStarted as exc:
        service.stop()
        unavailable(f"Kafka (Tansu) unavailable: {exc}")
    try:
        yield service
    finally:
        service.stop()


async def test_broker_restart_unavailable_then_reconnects(own_broker: KafkaService) -> None:
    """While the broker is down a publish raises TransportUnavailable; once it is back the
    same transport publishes again and the running consumer gets the new messages (Tansu's
    memory storage lost the earlier ones and the topic: it is created again)."""
    url = own_broker.url(timeout=2)
    topic = f"restart.t{os.urandom(3).hex()}"
    async with open_transport(url) as transport:
        got = Recorder()
        consumer = await transport.subscribe(topic, "survivors", got)
        before = msg(topic, 1, key="k")
        await transport.publish(before)
        await eventually(lambda: before.id in got.ids(), what="the first message")
        own_broker.kill()
        with pytest.raises(TransportUnavailable):
            await transport.publish(msg(topic, 2, key="k"))
        await asyncio.to_thread(own_broker.restart)
        after = msg(topic, 3, key="k")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            try:
                await transport.publish(after)
                break
            except TransportUnavailable:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.5)
        await eventually(lambda: after.id in got.ids(), 60, "the message after the restart")
        assert consumer.running


def test_topic_names_are_safe_and_distinct() -> None:
    """``_`` and ``.`` never meet (Kafka treats them alike), long names fit Kafka's limit and
    stay distinct, topics and queues never share a Kafka topic."""
    assert kafka_topic("chronik", "topic", "a_b") != kafka_topic("chronik", "topic", "a.b")
    assert kafka_topic("chronik", "topic", "a_b") == "chronik.t.aUb"
    assert kafka_topic("chronik", "topic", "x") != kafka_topic("chronik", "queue", "x")
    long_one = ".".join(["s" * 60] * 4) + ".a"
    long_two = ".".join(["s" * 60] * 4) + ".b"
    one, two = (kafka_topic("chronik", "topic", n) for n in (long_one, long_two))
    assert len(one) <= MAX_TOPIC and len(two) <= MAX_TOPIC and one != two


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("kafka://", {}),
        ("kafka://host:notaport", {}),
        ("kafka://user:pw@host:9092", {}),
        ("kafka://host:9092/path", {}),
        ("kafka://host:9092?partitions=0", {}),
        ("kafka://host:9092?bogus=1", {}),
        ("kafka://host:9092?enable_idempotence=maybe", {}),
        ("kafka://host:9092?topic_prefix=Bad_Prefix", {}),
        ("kafka://host:9092?timeout=-1", {}),
        ("kafka://host:9092", {"replication_factor": 0}),
        ("kafka://host:9092", {"client_id": "has space"}),
    ],
)
def test_bad_urls_and_options_are_configuration_errors(
    url: str, options: dict[str, object]
) -> None:
    """Each bad URL or option is a ConfigurationError before anything connects."""
    with pytest.raises(ConfigurationError):
        open_transport(url, **options)


async def test_no_broker_is_transport_unavailable() -> None:
    """Opening against a port nobody listens on is TransportUnavailable, not a hang."""
    transport = open_transport(f"kafka://127.0.0.1:{free_port()}?timeout=1")
    with pytest.raises(TransportUnavailable):
        await transport.open()
    with contextlib.suppress(Exception):
        await transport.close()
