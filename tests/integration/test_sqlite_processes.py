"""Several real OS processes on one SQLite file: delivery latency, racing writers, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import chronik

ROOT = Path(__file__).resolve().parents[2]


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    """Start a python child running ``code`` with ``args`` in sys.argv."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


APPENDER = """
import asyncio, sys, time, chronik
async def main():
    async with chronik.open_store(sys.argv[1]) as store:
        for i in range(int(sys.argv[2])):
            await asyncio.sleep(0.02)
            await store.append(chronik.StreamId("remote", "r1"),
                               [chronik.EventData("remote.tick", {"i": i, "t": time.time()})])
asyncio.run(main())
"""


async def test_another_processes_appends_reach_a_subscriber_quickly(tmp_path: Path) -> None:
    """Events appended by another process reach a live subscriber here within 50 ms."""
    url = f"sqlite:///{tmp_path}/shared.db"
    async with chronik.open_store(url) as store:
        sub = store.subscribe()
        child = spawn(APPENDER, url, "40")
        latencies = []
        async with sub:
            async for event in sub:
                latencies.append(time.time() - event.json()["t"])
                if len(latencies) == 40:
                    break
        assert await asyncio.to_thread(child.wait, 30) == 0
    assert statistics.median(latencies) < 0.05, latencies
    assert max(latencies) < 0.25, latencies


RACER = """
import asyncio, sys, chronik
async def main():
    wins = 0
    async with chronik.open_store(sys.argv[1]) as store:
        streams = [chronik.StreamId("race", f"s{i}") for i in range(3)]
        while wins < int(sys.argv[3]):
            for s in streams[: int(sys.argv[3]) - wins]:
                version = await store.stream_version(s)
                expected = chronik.NO_STREAM if version is None else version
                data = chronik.EventData("race.won", {"by": sys.argv[2], "n": wins})
                try:
                    await store.append(s, [data], expected)
                    wins += 1
                    print(data.event_id, flush=True)
                except chronik.WrongExpectedVersion:
                    pass
asyncio.run(main())
"""


async def test_racing_processes_leave_gapless_streams(tmp_path: Path) -> None:
    """Three processes racing on the same streams lose nothing, duplicate nothing, leave no gap."""
    url = f"sqlite:///{tmp_path}/race.db"
    async with chronik.open_store(url) as store:
        await store.head()  # create the schema before the racers start
    children = [spawn(RACER, url, f"p{k}", "60") for k in range(3)]
    outputs = [await asyncio.to_thread(c.communicate, timeout=60) for c in children]
    assert all(c.returncode == 0 for c in children), [o[1] for o in outputs]
    won = [line for out, _ in outputs for line in out.split()]
    assert len(won) == 180
    async with chronik.open_store(url) as store:
        events = [e async for e in store.read_all()]
        assert sorted(e.event_id for e in events) == sorted(won)
        for i in range(3):
            seqs = [e.sequence async for e in store.read_stream(chronik.StreamId("race", f"s{i}"))]
            assert seqs == list(range(len(seqs)))


BATCHER = """
import asyncio, sys, chronik
async def main():
    async with chronik.open_store(sys.argv[1]) as store:
        print("ready", flush=True)
        batch = 0
        while True:
            s = chronik.StreamId("crash", f"s{batch % 5}")
            await store.append(s, [chronik.EventData("crash.part", {"batch": batch, "part": p})
                                   for p in range(3)])
            batch += 1
asyncio.run(main())
"""


async def test_kill_9_mid_append_leaves_whole_batches_only(tmp_path: Path) -> None:
    """After SIGKILL of a writer, every batch is whole or absent and the file keeps working."""
    url = f"sqlite:///{tmp_path}/crash.db"
    child = spawn(BATCHER, url)
    assert child.stdout is not None
    assert (await asyncio.to_thread(child.stdout.readline)).strip() == "ready"
    await asyncio.sleep(0.4)
    child.send_signal(signal.SIGKILL)
    await asyncio.to_thread(child.wait, 10)
    assert child.returncode == -signal.SIGKILL
    async with chronik.open_store(url) as store:
        events = [e async for e in store.read_all()]
        assert len(events) > 30  # it was really writing when it died
        parts: dict[int, list[int]] = {}
        for e in events:
            parts.setdefault(e.json()["batch"], []).append(e.json()["part"])
        assert all(p == [0, 1, 2] for p in parts.values())
        assert sorted(parts) == list(range(len(parts)))
        for i in range(5):
            s = chronik.StreamId("crash", f"s{i}")
            seqs = [e.sequence async for e in store.read_stream(s)]
            assert seqs == list(range(len(seqs)))
            result = await store.append(s, [chronik.EventData("after.crash", {})], seqs[-1])
            assert result.first_sequence == len(seqs)
