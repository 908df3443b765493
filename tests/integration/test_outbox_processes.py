"""The outbox dispatcher as a real process, killed with SIGKILL at random points."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import chronik
from chronik.outbox import OutboxAdmin, record
from chronik.transports import open_transport
from chronik.transports.message import Delivery, Message

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 1000
BATCH = 20
KILLS = 3


def dispatcher(store: str, transport: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chronik.cli",
            "outbox",
            "run",
            "--store",
            store,
            "--transport",
            transport,
            "--batch-size",
            str(BATCH),
            "--lease-ttl",
            "0.5",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_kill_9_loses_nothing_and_duplicates_stay_within_a_batch(
    tmp_path: Path, nats_url: str
) -> None:
    """Every recorded message arrives despite SIGKILLs; duplicates at most a batch per kill."""
    store_url = f"sqlite:///{tmp_path}/events.db"
    ids = [f"msg-{i}" for i in range(MESSAGES)]
    async with chronik.open_store(store_url) as store:
        for i, message_id in enumerate(ids):
            async with store.transaction() as tx:
                tx.append(chronik.StreamId("customer", f"c{i}"), [chronik.EventData("Created", {})])
                record(tx, Message(topic="shop.registered", body=b"{}", id=message_id))
        received: list[str] = []

        async def handle(delivery: Delivery) -> None:
            received.append(delivery.id)

        async with open_transport(nats_url) as transport:
            await transport.subscribe("shop.registered", "probe", handle)
            rng = random.Random(7)
            proc = dispatcher(store_url, nats_url)
            try:
                at_kill = []
                for k in range(1, KILLS + 1):  # kill mid-stream, at random points past k/4
                    mark = MESSAGES * k // (KILLS + 1) + rng.randrange(BATCH)
                    async with asyncio.timeout(60):
                        while len(set(received)) < mark:
                            await asyncio.sleep(0.001)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    at_kill.append(len(set(received)))
                    proc = dispatcher(store_url, nats_url)
                async with asyncio.timeout(120):
                    while set(received) != set(ids):
                        await asyncio.sleep(0.02)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        assert all(n < MESSAGES for n in at_kill), at_kill  # the kills hit unfinished work
        assert set(received) == set(ids)
        assert len(received) - len(set(received)) <= KILLS * BATCH
        status = await OutboxAdmin(store).status()
        assert status.pending == 0 and status.done == MESSAGES
