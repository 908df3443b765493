"""Per-key order across competing consumer processes killed at random (kill -9) and restarted.

Each run publishes keyed (and a few unkeyed) messages to a fresh topic that three consumer
processes of one group share (every other run: sends them to a queue of three listeners);
meanwhile seeded chaos kills one or two of them with SIGKILL and starts replacements. Every
process appends what its handler does to one log file (one ``write`` per line, O_APPEND: the
file's order is the order things happened). After the run, ``key_order_violations`` must find
nothing: each key's messages first handed out in publish order, none before the key's previous
message was finished (a killed process's running handlers end with it). Redeliveries of the
same message are allowed.

``make test`` runs 20 runs per broker; ``make soak`` (CHRONIK_SOAK=10) runs 1,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chronik.errors import ConfigurationError
from chronik.testing.transport_key_order import Event, key_order_violations
from chronik.transports import Message, Transport, open_transport
from chronik.transports.partitions import DEFAULT_PARTITIONS, partition_of, partition_suffix

WORKER = textwrap.dedent(
    """
    import asyncio, os, random, sys, traceback
    from chronik.transports import FailurePolicy, open_transport

    async def main(url, who):
        loop = asyncio.get_running_loop()
        commands = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(commands), sys.stdin
        )
        rng = random.Random(who)
        policy = FailurePolicy(retries=1000, backoff=0.01, backoff_max=0.05)
        async with open_transport(url) as transport:
            consumer, fd, stopping = None, None, set()
            print("up", flush=True)
            while line := await commands.readline():
                command, *args = line.decode().split()
                if command in ("sub", "listen"):
                    topic, path = args
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

                    def write(what, d, fd=fd):
                        os.write(fd, f"{what} {who} {d.key or '-'} {int(d.body)}\\n".encode())

                    async def handle(d, write=write):
                        write("start", d)
                        await asyncio.sleep(rng.random() * 0.004)
                        if d.attempt == 1 and rng.random() < 0.05:
                            write("fail", d)
                            raise RuntimeError("a transient failure")
                        write("done", d)

                    options = dict(policy=policy, concurrency=2, prefetch=8)
                    if command == "sub":
                        consumer = await transport.subscribe(topic, "drill", handle, **options)
                    else:
                        consumer = await transport.listen(topic, handle, **options)
                    print("subscribed", topic, flush=True)
                elif command == "unsub":  # stops in the background: the next sub need not wait
                    async def stop(consumer=consumer, fd=fd):
                        try:
                            if consumer is not None:
                                await consumer.stop(grace=10)
                                os.close(fd)
                        except Exception:  # as loud as before: the process ends
                            traceback.print_exc()
                            os._exit(70)
                        print("unsubscribed", flush=True)

                    stopping.add(asyncio.create_task(stop()))
                    consumer = None

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)
KEYS = 6
MESSAGES = 48
_names = itertools.count(100)


class Worker:
    """A consumer process of the drill's group."""

    def __init__(self, proc: asyncio.subprocess.Process, who: str, err: Path) -> None:
        self.proc = proc
        self.who = who
        self.err = err

    async def line(self, within: float = 60) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not raw:
            code = await self.proc.wait()
            pytest.fail(f"worker {self.who} exited with {code}: {self.err.read_text()[-3000:]}")
        return raw.decode().strip()

    def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")


async def _spawn(url: str, who: str, logs: Path) -> Worker:
    err = logs / f"{who}.err"
    stderr = open(err, "wb")  # noqa: SIM115 - the child owns it
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            url,
            who,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    finally:
        stderr.close()
    return Worker(proc, who, err)


async def _start(url: str, logs: Path) -> Worker:
    """A new worker, connected (a connect that times out on a loaded machine is retried)."""
    for attempt in range(3):
        worker = await _spawn(url, f"w{next(_names)}", logs)
        assert worker.proc.stdout is not None
        if await asyncio.wait_for(worker.proc.stdout.readline(), 60) == b"up\n":
            return worker
        if attempt == 2:
            pytest.fail(f"worker {worker.who} did not start: {worker.err.read_text()[-3000:]}")
        await worker.proc.wait()
    raise AssertionError("unreachable")


async def _drop_rabbitmq_queues(url: str, topic: str, join: str) -> None:
    """Delete a finished run's quorum queues (9 per run): thousands of them slow the node."""
    import aio_pika

    base = f"chronik.g.drill.{topic}" if join == "sub" else f"chronik.q.{topic}"
    names = [base] + [f"{base}.{partition_suffix(p)}" for p in range(DEFAULT_PARTITIONS)]
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for queue in names:
            await channel.queue_delete(queue)
    finally:
        await connection.close()


def _events(path: Path) -> tuple[list[Event], set[int]]:
    """The log's keyed events, and the numbers of every message some handler finished."""
    events: list[Event] = []
    done: set[int] = set()
    for line in path.read_text().splitlines():
        what, who, key, n = line.split()
        if what == "done":
            done.add(int(n))
        if key != "-" or what == "killed":
            events.append((what, who, key, int(n)))  # type: ignore[arg-type]
    return events, done


async def _one_run(
    run: int, broker: str, url: str, workers: list[Worker], publisher: Transport, logs: Path
) -> None:
    rng = random.Random(f"{broker}-{run}")
    topic = f"order.r{run}.{os.urandom(3).hex()}"
    log = logs / f"run{run}.log"
    log.touch()
    join = "sub" if run % 2 == 0 else "listen"  # a group's consumers, or a queue's listeners
    for worker in workers:
        worker.command(f"{join} {topic} {log}")
    for worker in workers:
        while (await worker.line()) != f"subscribed {topic}":
            pass
    published: dict[str, list[int]] = {}
    messages = []
    for n in range(MESSAGES):
        key = None if rng.random() < 0.1 else f"k{rng.randrange(KEYS)}"
        messages.append(Message(topic=topic, body=str(n).encode(), key=key))
        if key is not None:
            published.setdefault(key, []).append(n)

    async def chaos() -> None:
        for _ in range(rng.choice([1, 1, 2])):
            await asyncio.sleep(rng.uniform(0.02, 0.3))
            victim = workers.pop(rng.randrange(len(workers)))
            victim.proc.send_signal(signal.SIGKILL)
            # logged at once: the broker may hand its messages over before we reap it, and
            # a killed process starts no more writes
            with open(log, "a") as f:
                f.write(f"killed {victim.who} - 0\n")
            await victim.proc.wait()
            fresh = await _start(url, logs)
            fresh.command(f"{join} {topic} {log}")
            assert await fresh.line() == f"subscribed {topic}"
            workers.append(fresh)

    async def publish() -> None:
        for m in messages:
            await (publisher.publish if join == "sub" else publisher.send)(m)
            if rng.random() < 0.2:
                await asyncio.sleep(0.01)

    await asyncio.gather(chaos(), publish())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        events, done = _events(log)
        if done >= set(range(MESSAGES)):
            break
        if loop.time() > deadline:
            pytest.fail(f"run {run}: not every message was handled: {sorted(done)}")
        await asyncio.sleep(0.05)
    assert key_order_violations(events, published) == [], f"run {run} ({log})"
    for worker in workers:  # each stops its consumer while the next run subscribes
        worker.command("unsub")
    if broker == "rabbitmq":  # the run's queues are deleted: once nobody consumes them
        for worker in workers:
            while (await worker.line()) != "unsubscribed":
                pass
        await _drop_rabbitmq_queues(url, topic, join)


@pytest.fixture(params=["postgresql", "nats", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(name, URL) of each real broker, with a short lease / ack wait so a killed consumer's
    message comes back soon."""
    if request.param == "postgresql":
        return "postgresql", str(request.getfixturevalue("postgres_url")) + "&lease=0.5"
    if request.param == "nats":
        return "nats", f"{request.getfixturevalue('nats_url')}?ack_wait=0.5"
    return "rabbitmq", str(request.getfixturevalue("amqp_url"))


@pytest.mark.drill
@pytest.mark.timeout(3600)
async def test_killed_consumers_never_break_key_order(
    broker: tuple[str, str], scale: int, tmp_path: Path
) -> None:
    """Seeded runs of three consumer processes, one or two killed (SIGKILL) and replaced in
    each run: 0 out-of-order deliveries per key (20 runs in make test, 1,000 in make soak)."""
    name, url = broker
    runs = 20 if scale == 1 else 100 * scale
    workers: list[Worker] = []
    try:
        workers += [await _start(url, tmp_path) for _ in range(3)]
        async with open_transport(url) as publisher:
            for run in range(runs):
                await _one_run(run, name, url, workers, publisher, tmp_path)
    finally:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
            await worker.proc.wait()


def test_partitions_are_pinned_and_checked() -> None:
    """A key's partition is the same in every process and release (a changed hash would
    reorder keys in flight during an upgrade); a bad ``partitions`` option is refused."""
    keys = ("a", "customer-4", "ü", "k0")
    assert [partition_of(k, 8) for k in keys] == [3, 2, 5, 7]
    assert [partition_of(k, 256) for k in keys] == [67, 242, 213, 63]
    assert open_transport("nats://127.0.0.1:1?partitions=3").partitions == 3
    rabbit = open_transport("amqp://guest:guest@127.0.0.1:1/?partitions=16&heartbeat=5")
    assert rabbit.partitions == 16
    for bad in ("0", "257", "x", "1.5"):
        for url in (f"nats://127.0.0.1:1?partitions={bad}", f"amqp://h:1/?partitions={bad}"):
            with pytest.raises(ConfigurationError, match="partitions"):
                open_transport(url)


def test_the_checker_finds_each_kind_of_violation() -> None:
    """key_order_violations accepts redeliveries and a killed consumer's unfinished message,
    and reports a skipped message, a start before the previous one finished, and a start
    while the previous one was only retrying."""
    published = {"k": [1, 2, 3]}
    fine: list[Event] = [
        ("start", "a", "k", 1),
        ("killed", "a", "", 0),
        ("start", "b", "k", 1),
        ("done", "b", "k", 1),
        ("start", "b", "k", 2),
        ("fail", "b", "k", 2),
        ("start", "b", "k", 2),
        ("done", "b", "k", 2),
        ("start", "c", "k", 1),  # a late redelivery of a finished message
        ("done", "c", "k", 1),
        ("start", "b", "k", 3),
        ("gave_up", "b", "k", 3),
    ]
    assert key_order_violations(fine, published) == []
    skipped: list[Event] = [("start", "a", "k", 2)]
    assert (
        key_order_violations(skipped, published)[0] == "key k: 2 handed out first while 1 was due"
    )
    overlap: list[Event] = [("start", "a", "k", 1), ("start", "b", "k", 2)]
    assert key_order_violations(overlap, published) == ["key k: 2 handed out before 1 was finished"]
    retrying: list[Event] = [("start", "a", "k", 1), ("fail", "a", "k", 1), ("start", "b", "k", 2)]
    assert key_order_violations(retrying, published) == [
        "key k: 2 handed out before 1 was finished"
    ]
    unfinished_crash: list[Event] = [
        ("start", "a", "k", 1),
        ("killed", "a", "", 0),
        ("start", "b", "k", 2),
    ]
    assert key_order_violations(unfinished_crash, published) == [
        "key k: 2 handed out before 1 was finished"
    ]
