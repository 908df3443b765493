"""A consumer process killed with SIGKILL mid-message: another consumer gets the message again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from chronik.testing.transport_conformance import Recorder, eventually
from chronik.transports import Delivery, Message, open_transport

CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    from chronik.transports import open_transport

    async def main(url, topic):
        async def hang(delivery):
            print("got", delivery.id, flush=True)
            await asyncio.Event().wait()

        async with open_transport(url) as transport:
            await transport.subscribe(topic, "crashy", hang)
            print("ready", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.fixture(params=["postgresql", "nats", "rabbitmq"])
def url(request: pytest.FixtureRequest) -> str:
    """Each real broker, with a short lease / ack wait so a dead consumer's message returns."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url")) + "&lease=1"
    if request.param == "nats":
        return f"{request.getfixturevalue('nats_url')}?ack_wait=1"
    return str(request.getfixturevalue("amqp_url"))


async def _line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if not line:
        pytest.fail(f"consumer exited: {(await proc.communicate())[1].decode()[-2000:]}")
    return line.decode().strip()


async def test_killed_consumer_message_is_redelivered(url: str) -> None:
    """The message a SIGKILLed consumer was handling reaches a surviving consumer of the
    group, as a redelivery (attempt >= 2), and nothing else of the group is lost."""
    topic = f"crash.t{os.urandom(3).hex()}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CONSUMER,
        url,
        topic,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert await _line(proc) == "ready"
        async with open_transport(url) as transport:
            first = Message(topic=topic, body=b"1")
            await transport.publish(first)
            assert await _line(proc) == f"got {first.id}"
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            second = Message(topic=topic, body=b"2")
            await transport.publish(second)
            got = Recorder()
            await transport.subscribe(topic, "crashy", got)
            await eventually(lambda: {first.id, second.id} <= set(got.ids()), what="both")
            assert next(d.attempt for d in got.got if d.id == first.id) >= 2
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("broker", ["postgresql", "nats"])
async def test_slow_handler_keeps_its_message(broker: str, request: pytest.FixtureRequest) -> None:
    """A handler running for several leases keeps its message (the consumer renews the
    lease / ack wait): a competing consumer of the group never gets it."""
    if broker == "postgresql":
        url = str(request.getfixturevalue("postgres_url")) + "&lease=0.6"
    else:
        url = f"{request.getfixturevalue('nats_url')}?ack_wait=0.6"
    topic = f"slow.t{os.urandom(3).hex()}"
    calls: list[str] = []

    async def slow(d: Delivery) -> None:
        calls.append(d.id)
        await asyncio.sleep(2.5)

    async with open_transport(url) as one, open_transport(url) as two:
        first = await one.subscribe(topic, "slow", slow)
        second = await two.subscribe(topic, "slow", slow)
        await one.publish(Message(topic=topic, body=b"slow"))
        await eventually(lambda: first.acked + second.acked == 1, what="the ack")
        assert len(calls) == 1
