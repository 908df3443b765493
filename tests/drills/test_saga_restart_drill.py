"""Drill: the shop's loyalty saga in `chronik serve` on SQLite, the server killed -9 while
commands that trigger the saga flow, restarted; then the saga rebuilt by an operator."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import chronik
from chronik.projections import ProjectionAdmin
from chronik.saga_record import RECORD
from tests.drills.helpers import (
    Probe,
    Serve,
    cli,
    gaps,
    report,
    seconds,
    shop_config,
    wait_quiet,
)
from tests.drills.shop import (
    Tally,
    check_acknowledged,
    first_ok_after,
    saga_effects,
    shop_client,
    shop_fold,
    shop_read_models,
)

pytestmark = pytest.mark.drill

PROJECTIONS = ["receipts", "customer_summary", "loyalty"]
READY_BOUND = 30.0  # /readyz 200 for good this long after a restart (the lease TTL is 3 s)


async def test_saga_sends_each_command_once_through_kill_9_and_a_rebuild(
    tmp_path: Path, scale: int, record_property: Callable[[str, object], None]
) -> None:
    """Shoppers complete transactions over HTTP while serve is killed -9 (scale times) and
    restarted: every acknowledged command is stored once, every completed transaction earns
    exactly one LoyaltyPointsAdded, read models equal a fresh fold; `chronik projections
    rebuild loyalty` afterwards replays the saga from its record and sends nothing."""
    url = f"sqlite:///{tmp_path}/events.db"
    serve = Serve(tmp_path, shop_config(tmp_path), url)
    tally = Tally()
    probe = Probe(serve.base_url)
    kills: list[float] = []
    restarts: list[float] = []
    stop_load, stop_probe = asyncio.Event(), asyncio.Event()
    try:
        serve.start()
        await serve.wait_ready()
        async with (
            httpx.AsyncClient(base_url=serve.base_url) as http,
            chronik.open_store(url) as store,
        ):
            clients = [
                asyncio.create_task(shop_client(http, f"c{i}", tally, stop_load)) for i in range(6)
            ]
            prober = asyncio.create_task(probe.run(stop_probe))
            try:
                for _ in range(scale):
                    await asyncio.sleep(2.0)  # commands and saga work in flight
                    kills.append(time.monotonic())
                    serve.kill9()
                    serve.start()
                    restarts.append(time.monotonic())
                    assert serve.proc is not None
                    pid = serve.proc.pid
                    async with asyncio.timeout(READY_BOUND):  # serving and projecting again
                        while first_ok_after(tally, restarts[-1]) is None or not (
                            await taken_over(store, pid)
                        ):
                            serve.check_alive()
                            await asyncio.sleep(0.1)
                    await asyncio.sleep(1.0)
                await asyncio.sleep(1.0)
            finally:
                stop_load.set()
                async with asyncio.timeout(60):
                    await asyncio.gather(*clients, return_exceptions=True)
                stop_probe.set()
                await prober
            events = await wait_quiet(store, PROJECTIONS, timeout=60)
            models = await shop_read_models(store)
            record = Counter(r["outcome"] for r in await store.read_table(RECORD.name))
            parked = await ProjectionAdmin(store).dead_letters()
            rebuild = await asyncio.to_thread(
                cli, "projections", "rebuild", "loyalty", "--store", url
            )
            after = await wait_quiet(store, PROJECTIONS, timeout=60)
            loyalty = await ProjectionAdmin(store).status("loyalty")
        serve.check_alive()
    finally:
        stop_load.set()
        stop_probe.set()
        serve.stop()
    lost, duplicated = check_acknowledged(events, tally)
    transactions, saga_missing, saga_duplicated = saga_effects(events)
    resent = len(after) - len(events)
    windows = list(zip(restarts, [*kills[1:], None], strict=True))
    report(
        record_property,
        "saga_kill_9_sqlite",
        scale=scale,
        injected_faults=len(restarts),
        commands_acknowledged=len(tally.acknowledged),
        transactions_completed=transactions,
        acknowledged_lost=lost + saga_missing,
        duplicated_effects=duplicated + saga_duplicated + max(0, resent),
        sent_by_rebuild=resent,
        answers_5xx=len(tally.answers_5xx),
        answers_503_in_flight=tally.answers_503,
        transport_errors_in_flight=tally.transport_errors,
        rejected=len(tally.rejected),
        dead_letters=len(parked),
        saga_record=dict(record),
        recover_command_s=[seconds(first_ok_after(tally, t), t) for t in restarts],
        recover_readyz_s=[seconds(probe.ready_for_good_after(t, end), t) for t, end in windows],
    )
    assert tally.answers_5xx == [], tally.answers_5xx[:5]
    assert tally.rejected == [], tally.rejected[:5]
    assert tally.given_up == [], "commands never acknowledged within 30 s of retries"
    assert [(d.projection, d.type, d.error) for d in parked] == []
    assert (lost, duplicated, saga_missing, saga_duplicated) == (0, 0, 0, 0)
    assert gaps(events) == []
    assert dict(record) == {"accepted": transactions}  # no intent left pending
    assert len(tally.acknowledged) > 20 * scale and transactions > 5 * scale
    assert models == shop_fold(events)
    ready = [probe.ready_for_good_after(t, end) for t, end in windows]
    assert all(
        r is not None and r - t < READY_BOUND for r, t in zip(ready, restarts, strict=True)
    ), probe.problems
    assert rebuild.returncode == 0 and "rebuilt loyalty: generation 2" in rebuild.stdout, (
        rebuild.stdout + rebuild.stderr
    )
    assert loyalty.generation == 2 and loyalty.building is None
    assert [e.event_id for e in after] == [e.event_id for e in events]  # nothing sent again


async def taken_over(store: chronik.EventStore, pid: int) -> bool:
    """Whether the server process ``pid`` runs every projection (the dead one's leases ended)."""
    statuses = {s.name: s for s in await ProjectionAdmin(store).statuses()}
    return all(
        n in statuses
        and statuses[n].alive
        and (statuses[n].owner or "").endswith(f":{pid}")
        and statuses[n].state == "running"
        for n in PROJECTIONS
    )
