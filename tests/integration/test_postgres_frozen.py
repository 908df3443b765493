"""A process frozen (SIGSTOP) inside a PostgreSQL transaction cannot block the others for long.

The store sets ``idle_in_transaction_session_timeout`` and ``lock_timeout`` on every connection,
so the server ends the frozen session: other writers to the same stream and checkpoint, and
readers held behind its transaction id, go on within the bound; the frozen process's late
commit fails typed, and its retry is fenced by the epoch the survivor took over with.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import chronik
from chronik import EventData, Position, StreamId
from chronik.store.postgres import PostgresEventStore

IDLE_MS = 2000

CHILD = """
import asyncio, sys, time
import chronik
from chronik import EventData, Position, StreamId
from chronik.testing.faults import inject

async def main(url):
    store = await chronik.open_store(url).open()
    s = StreamId("frozen", "f1")
    await store.append(s, [EventData("before", {})])
    await store.save_checkpoint("proj", Position(1, 1), epoch=1)
    faults = inject(store).install()
    # inside the unit: streams locked, checkpoint row written (a transaction id taken)
    faults.pause("append", lambda: (print("FROZEN", flush=True), time.sleep(3)))
    try:
        async with store.transaction() as tx:
            tx.append(s, [EventData("late", {})])
            tx.save_checkpoint("proj", Position(2, 2), epoch=1)
        print("COMMITTED", flush=True)
    except chronik.ChronikError as exc:
        print("FAILED", type(exc).__name__, flush=True)
    faults.uninstall()
    try:
        async with store.transaction() as tx:
            tx.append(s, [EventData("late", {})])
            tx.save_checkpoint("proj", Position(2, 2), epoch=1)
        print("RETRY COMMITTED", flush=True)
    except chronik.ChronikError as exc:
        print("RETRY", type(exc).__name__, flush=True)
    await store.close()

asyncio.run(main(sys.argv[1]))
"""


def test_a_frozen_transaction_is_cut_off_by_the_server(postgres_url: str) -> None:
    """SIGSTOP inside a unit: within ~idle timeout, a writer to the same stream and checkpoint
    and a reader of a later event go on; after SIGCONT the late commit fails typed and its
    retry raises CheckpointFenced; the frozen unit stored nothing."""
    url = f"{postgres_url}_frozen&idle_in_transaction_timeout_ms={IDLE_MS}"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "FROZEN", (line, child.stderr.read() if child.stderr else "")
        os.kill(child.pid, signal.SIGSTOP)
        stream = StreamId("frozen", "f1")

        async def survivors() -> float:
            start = time.monotonic()
            async with chronik.open_store(url) as store:
                async with asyncio.timeout(15):
                    other = await store.append(StreamId("frozen", "other"), [EventData("x", {})])
                    await store.append(stream, [EventData("survivor", {})], 0)
                    await store.save_checkpoint("proj", Position(3, 3), epoch=2)
                    while True:  # a reader gets past the frozen transaction's id
                        seen = [e.position async for e in store.read_all()]
                        if other.position in seen:
                            break
                        await asyncio.sleep(0.05)
                assert isinstance(store, PostgresEventStore)
                assert store.server_settings["lock_timeout"] == "5000"  # the default
            return time.monotonic() - start

        elapsed = asyncio.run(survivors())
        assert elapsed < IDLE_MS / 1000 + 6, elapsed
        os.kill(child.pid, signal.SIGCONT)
        out, err = child.communicate(timeout=20)
        assert out.split("\n")[:2] == ["FAILED StoreUnavailable", "RETRY CheckpointFenced"], (
            out,
            err,
        )

        async def check() -> None:
            async with chronik.open_store(url) as store:
                types = [e.type async for e in store.read_stream(stream)]
                assert types == ["before", "survivor"]
                cp = await store.load_checkpoint("proj")
                assert cp is not None and (cp.position, cp.epoch) == (Position(3, 3), 2)

        asyncio.run(check())
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()
