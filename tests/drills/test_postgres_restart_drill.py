"""Drill: PostgreSQL restarted under load (fast, then immediate shutdown) while `chronik serve`
runs the example shop with its projections and loyalty saga and clients keep sending commands."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import chronik
from chronik.projections import ProjectionAdmin
from chronik.testing.services import PostgresService
from tests.drills.helpers import (
    SHOP_CONFIG,
    Probe,
    Serve,
    gaps,
    pg_ctl,
    report,
    seconds,
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
OUTAGE = 2.0  # seconds PostgreSQL stays down in each restart
READY_BOUND = 30.0  # /readyz must be 200 again this long after PostgreSQL is back


async def test_postgres_restarts_under_load_lose_and_duplicate_nothing(
    tmp_path: Path,
    postgres_server: PostgresService,
    postgres_url: str,
    scale: int,
    record_property: Callable[[str, object], None],
) -> None:
    """Commands over HTTP through 2 x scale PostgreSQL restarts (alternately -m fast and -m
    immediate): every acknowledged command's events are stored once, the saga sends each
    command once, no stream has a gap, no 500, /readyz is 200 within 30 s of each restart, and
    the read models equal a fresh fold of the events."""
    serve = Serve(tmp_path, SHOP_CONFIG, postgres_url)
    tally = Tally()
    probe = Probe(serve.base_url)
    faults: list[tuple[str, float, float]] = []  # (mode, when it went down, when it was back)
    stop_load, stop_probe = asyncio.Event(), asyncio.Event()
    try:
        serve.start()
        await serve.wait_ready()
        async with httpx.AsyncClient(base_url=serve.base_url) as http:
            clients = [
                asyncio.create_task(shop_client(http, f"c{i}", tally, stop_load)) for i in range(6)
            ]
            prober = asyncio.create_task(probe.run(stop_probe))
            try:
                for n in range(2 * scale):
                    mode = "fast" if n % 2 == 0 else "immediate"
                    await asyncio.sleep(2.0)  # load before the fault
                    down = time.monotonic()
                    await asyncio.to_thread(pg_ctl, postgres_server, "stop", mode)
                    await asyncio.sleep(OUTAGE)
                    await asyncio.to_thread(pg_ctl, postgres_server, "start")
                    back = time.monotonic()
                    faults.append((mode, down, back))
                    async with asyncio.timeout(READY_BOUND):  # recovered before the next one
                        while probe.first_ready_after(back) is None or (
                            first_ok_after(tally, back) is None
                        ):
                            serve.check_alive()
                            await asyncio.sleep(0.1)
                await asyncio.sleep(2.0)  # load after the last fault
            finally:
                stop_load.set()
                async with asyncio.timeout(60):  # each client finishes its retries (bounded)
                    await asyncio.gather(*clients, return_exceptions=True)
                stop_probe.set()
                await prober
        serve.check_alive()
        async with chronik.open_store(postgres_url) as store:
            events = await wait_quiet(store, PROJECTIONS, timeout=90)
            models = await shop_read_models(store)
            parked = await ProjectionAdmin(store).dead_letters()
        lost, duplicated = check_acknowledged(events, tally)
        transactions, saga_missing, saga_duplicated = saga_effects(events)
        recover_command = [seconds(first_ok_after(tally, t), t) for _, _, t in faults]
        ends = [*(down for _, down, _ in faults[1:]), None]
        recover_ready = [
            seconds(probe.ready_for_good_after(t, end), t)
            for (_, _, t), end in zip(faults, ends, strict=True)
        ]
        report(
            record_property,
            "postgres_restart_under_load",
            scale=scale,
            faults=[mode for mode, _, _ in faults],
            injected_faults=len(faults),
            commands_acknowledged=len(tally.acknowledged),
            transactions_completed=transactions,
            acknowledged_lost=lost + saga_missing,
            duplicated_effects=duplicated + saga_duplicated,
            answers_5xx=len(tally.answers_5xx),
            answers_503_in_flight=tally.answers_503,
            transport_errors_in_flight=tally.transport_errors,
            rejected=len(tally.rejected),
            dead_letters=len(parked),
            given_up=len(tally.given_up),
            recover_command_s=recover_command,
            recover_readyz_s=recover_ready,
        )
        assert tally.answers_5xx == [], tally.answers_5xx[:5]
        assert tally.rejected == [], tally.rejected[:5]
        assert tally.given_up == [], "commands never acknowledged within 30 s of retries"
        assert (lost, duplicated, saga_duplicated) == (0, 0, 0)
        assert gaps(events) == []
        assert len(tally.acknowledged) > 20 * scale and transactions > 5 * scale
        assert all(r is not None and r < READY_BOUND for r in recover_ready), (
            recover_ready,
            probe.problems,
        )
        assert not parked, sorted({(d.projection, d.type, d.error) for d in parked})
        assert saga_missing == 0, "saga commands never sent"
        assert models == shop_fold(events), "read models differ from a fresh fold"
    finally:
        stop_load.set()
        stop_probe.set()
        serve.stop()
        if not postgres_server_running(postgres_server):
            with contextlib.suppress(AssertionError):
                pg_ctl(postgres_server, "start")


def postgres_server_running(service: PostgresService) -> bool:
    """Whether the cluster's postmaster runs (pg_ctl status)."""
    try:
        pg_ctl(service, "status")
    except AssertionError:
        return False
    return True
