"""Drill: the shop on a local cluster (3 servers + 2 projection workers, PostgreSQL + NATS on
loopback, chronik.testing.local_cluster) under chaos. Shoppers send commands to random servers
(retrying the same command id on another node after an unknown outcome) while a seeded chaos
loop kills -9 and restarts a random server or worker every 3-6 s (a projection lease holder at
most every 20 s, the others in between) and restarts NATS once. Afterwards:
every acknowledged command is stored once, the read models equal a fresh fold, the loyalty saga
acted once per completed transaction, every autocomplete deadline fired once, every outbox
message was consumed once. ``make test`` runs 35 s of load; ``make soak`` ten times that.

The cluster's routing mode is a parameter: ``make test`` runs ``affinity`` (commands forwarded
to their aggregate's owner), ``make soak`` both ``local`` and ``affinity``. As in ``deploy/``,
the servers run no projections (so no sagas): the workers do, and the deadline scheduler's
lease per owner table lets a worker fire the sagas' deadlines. CHRONIK_CHAOS_SEED picks the
chaos schedule (default 21).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import chronik
from chronik.projections import ProjectionAdmin
from chronik.saga_record import RECORD
from chronik.testing.local_cluster import SERVER, LocalCluster, Node
from chronik.testing.service_base import ServiceNotStarted, unavailable
from tests.drills.chaos import (
    deadline_problems,
    deadlines_done,
    latency_ms,
    outbox_consumed,
    outbox_problems,
    settle,
    shopper,
    stuck_deadlines,
)
from tests.drills.helpers import ROOT, gaps, read_events, report, wait_quiet
from tests.drills.shop import Tally, check_acknowledged, saga_effects, shop_fold, shop_read_models

SEED = int(os.environ.get("CHRONIK_CHAOS_SEED", "21") or "21")
LOAD_S = 35.0  # seconds of load at scale 1
_SCALE = max(1, int(os.environ.get("CHRONIK_SOAK", "1") or "1"))  # as the scale fixture
#: start-up and settling (up to ~4 min on a busy machine) plus three times the load
ROUTINGS = ["affinity"] if _SCALE == 1 else ["local", "affinity"]
pytestmark = [pytest.mark.drill, pytest.mark.timeout(240 + 3 * LOAD_S * _SCALE)]
CLIENTS = 6
#: each shopper's pause between transactions: the offered load stays below what the sagas
#: sustain here (~60-70 events/s each on a shared 2-core machine); unpaced, 6 shoppers offer
#: ~350 events/s and the sagas' lag grows without bound over a soak
PACE_S = 0.5
#: a projection lease holder is killed at most this often (a takeover waits out the 10 s
#: lease, then the projections catch up); other nodes are killed every 3-6 s
HOLDER_GAP_S = 20.0
PROJECTIONS = ["receipts", "customer_summary", "loyalty", "autocomplete"]
BASE = {
    "app": "examples.shop.app:build_app",
    "projections": "tests.drills.chaos_app:projections",
    "consumers": {
        "subscriptions": [
            {
                "topic": "customer.registered",
                "group": "chaos",
                "handler": "tests.drills.chaos_app:record_consumed",
                "retries": 20,
                "backoff": 0.1,
                "backoff_max": 2.0,
            }
        ]
    },
}
#: Servers run no projections, as in deploy/ (a deadline lease per owner table: the workers
#: fire the sagas' deadlines whoever holds the aggregates' one)
SERVERS_RUN_PROJECTIONS = False


@pytest.mark.parametrize("routing", ROUTINGS)
async def test_cluster_survives_kill_9_of_nodes_and_a_nats_restart_without_loss_or_repeat(
    tmp_path: Path, scale: int, routing: str, record_property: Callable[[str, object], None]
) -> None:
    """Shoppers send commands to random servers while random nodes are killed -9 and
    restarted and NATS restarts once: nothing acknowledged is lost or stored twice, read models
    equal the fold, sagas, deadlines and the outbox consumer each act exactly once."""
    overrides = {"cluster": {"routing": routing}} if routing != "local" else {}
    cluster = LocalCluster(
        servers=3,
        workers=2,
        base=BASE,
        directory=tmp_path / "cluster",
        app_dir=ROOT,
        grace=3.0,
        overrides=overrides,
        env={"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"},
        projections_on_servers=SERVERS_RUN_PROJECTIONS,
    )
    try:
        await asyncio.to_thread(cluster.start)
    except ServiceNotStarted as exc:
        unavailable(f"local cluster services unavailable: {exc}")
    rng = random.Random(SEED)
    tally, auto = Tally(), set[str]()
    kills: list[str] = []
    takeovers: list[float] = []
    watchers: list[asyncio.Task[None]] = []
    nats_restarts = 0
    last_takeover = -HOLDER_GAP_S
    stop_load = asyncio.Event()
    try:
        await asyncio.to_thread(cluster.wait_ready, 180.0)
        servers = cluster.of_role(SERVER)
        async with chronik.open_store(cluster.store_url) as store, _clients(servers) as nodes:
            started = time.monotonic()
            shoppers = [
                asyncio.create_task(
                    shopper(nodes, f"c{i}", SEED + i, tally, auto, stop_load, pace=PACE_S)
                )
                for i in range(CLIENTS)
            ]
            end = started + LOAD_S * scale
            nats_at = started + LOAD_S * scale / 2
            try:
                while time.monotonic() < end - 4.0:
                    await asyncio.sleep(rng.uniform(3.0, 6.0))
                    if nats_restarts == 0 and time.monotonic() >= nats_at:
                        await asyncio.to_thread(cluster.restart_nats)
                        nats_restarts += 1
                        continue
                    holders_ok = (
                        all(w.done() for w in watchers)
                        and time.monotonic() - last_takeover >= HOLDER_GAP_S
                    )
                    victim = await _victim(store, cluster, rng, holders_ok)
                    node = cluster.nodes[victim]
                    held = await _held_by(store, node.pid)
                    pid = node.pid
                    cluster.kill9(victim)
                    kills.append(victim)
                    if held and pid is not None:
                        last_takeover = time.monotonic()
                        watchers.append(asyncio.create_task(_takeover(store, pid, takeovers)))
                    await asyncio.sleep(rng.uniform(0.0, 2.0))
                    cluster.start_node(victim)
                elapsed = time.monotonic() - started
            finally:
                stop_load.set()
                async with asyncio.timeout(90):
                    await asyncio.gather(*shoppers, return_exceptions=True)
            await asyncio.to_thread(cluster.wait_ready, 120.0)
            async with asyncio.timeout(90):
                await asyncio.gather(*watchers)
            patience = 90.0 + 15.0 * scale  # the projections catch up after the last takeover
            settled = {
                "deadlines": await settle(lambda: deadlines_done(store, auto), patience),
                "outbox": await settle(lambda: outbox_consumed(store), patience),
            }
            stuck: dict[str, object] = {}
            if settled["deadlines"] is None:  # say why now: wait_quiet may fail next
                stuck = await stuck_deadlines(store, await read_events(store), auto)
                stuck["logged"] = _logged_problems(cluster)
                print(json.dumps({"stuck_deadlines": stuck}), flush=True)
            events = await wait_quiet(store, PROJECTIONS, timeout=patience)
            models = await shop_read_models(store)
            record = Counter(
                (r["owner"], r["outcome"]) for r in await store.read_table(RECORD.name)
            )
            parked = await ProjectionAdmin(store).dead_letters()
    finally:
        stop_load.set()
        for task in watchers:
            task.cancel()
        problems = await asyncio.to_thread(cluster.stop)
    lost, duplicated = check_acknowledged(events, tally)
    transactions, saga_missing, saga_duplicated = saga_effects(events)
    late = deadline_problems(events, auto)
    messages, outbox = outbox_problems(events)
    report(
        record_property,
        f"cluster_chaos_{routing}",
        scale=scale,
        seed=SEED,
        nodes="3 servers + 2 workers, PostgreSQL + NATS",
        load_s=round(elapsed, 1),
        commands_acknowledged=len(tally.acknowledged),
        commands_per_s=round(len(tally.acknowledged) / elapsed, 1),
        latency_ms=latency_ms(tally),
        kills=len(kills),
        killed=dict(Counter(cluster.nodes[n].role for n in kills)),
        restarts=len(kills),
        nats_restarts=nats_restarts,
        takeover_s=[round(t, 2) for t in takeovers],
        max_takeover_s=round(max(takeovers), 2) if takeovers else None,
        transactions_completed=transactions,
        auto_completed=len(auto),
        outbox_messages=messages,
        acknowledged_lost=lost + saga_missing,
        duplicated_effects=duplicated + saga_duplicated,
        deadline_problems=len(late),
        outbox_problems=len(outbox),
        answers_5xx=len(tally.answers_5xx),
        answers_503_in_flight=tally.answers_503,
        transport_errors_in_flight=tally.transport_errors,
        dead_letters=len(parked),
        saga_record={f"{o}:{s}": n for (o, s), n in sorted(record.items())},
        settle_s=settled,
        stop_problems=problems,
    )
    assert stuck == {}, stuck
    assert tally.answers_5xx == [], tally.answers_5xx[:5]
    assert tally.rejected == [], tally.rejected[:5]
    assert tally.given_up == [], "commands never acknowledged within 60 s of retries"
    assert [(d.projection, d.type, d.error) for d in parked] == []
    assert (lost, duplicated, saga_missing, saga_duplicated) == (0, 0, 0, 0)
    assert gaps(events) == []
    assert models == shop_fold(events)
    assert late == [], late[:5]
    assert outbox == [], outbox[:5]
    assert {s for (_, s) in record} == {"accepted"}  # no intent left pending, none rejected
    assert record[("loyalty", "accepted")] == transactions
    assert record[("autocomplete", "accepted")] == len(auto)
    assert len(kills) >= 3 * scale and nats_restarts == 1
    assert len(tally.acknowledged) > 50 * scale and len(auto) > 5 * scale


class _clients:
    """One HTTP client per server node."""

    def __init__(self, servers: list[Node]) -> None:
        self.urls = [n.http for n in servers]
        self.clients: list[httpx.AsyncClient] = []

    async def __aenter__(self) -> list[httpx.AsyncClient]:
        self.clients = [httpx.AsyncClient(base_url=u) for u in self.urls]
        return self.clients

    async def __aexit__(self, *exc: object) -> None:
        for c in self.clients:
            await c.aclose()


def _logged_problems(cluster: LocalCluster) -> dict[str, int]:
    """The nodes' WARNING / ERROR log lines (timestamps cut), the 15 most frequent."""
    seen: Counter[str] = Counter()
    for node in cluster.nodes.values():
        for line in node.log_tail(2_000_000).splitlines():
            if " WARNING " in line or " ERROR " in line:
                seen[f"{node.role}: {line.split(' ', 2)[-1][:200]}"] += 1
    return dict(seen.most_common(15))


async def _owners(store: chronik.EventStore) -> dict[str, str]:
    statuses = await ProjectionAdmin(store).statuses()
    return {s.name: s.owner or "" for s in statuses if s.name in PROJECTIONS and s.alive}


async def _held_by(store: chronik.EventStore, pid: int | None) -> bool:
    """Whether process ``pid`` holds a lease of one of the drill's projections."""
    owners = await _owners(store)
    return pid is not None and any(o.endswith(f":{pid}") for o in owners.values())


async def _victim(
    store: chronik.EventStore, cluster: LocalCluster, rng: random.Random, holders_ok: bool
) -> str:
    """A projection lease holder when ``holders_ok`` (a takeover to time), else any node that
    holds none: takeovers never overlap, so the projections keep up between them."""
    owners = set((await _owners(store)).values())
    names = sorted(cluster.nodes)

    def holds(name: str) -> bool:
        return any(o.endswith(f":{cluster.nodes[name].pid}") for o in owners)

    holders = [n for n in names if holds(n)]
    others = [n for n in names if n not in holders]
    return rng.choice(holders if holders_ok and holders else others or names)


async def _takeover(store: chronik.EventStore, dead: int, into: list[float]) -> None:
    """Time from now (the kill) until every projection runs, alive, on another process."""
    killed = time.monotonic()
    while True:
        statuses = {s.name: s for s in await ProjectionAdmin(store).statuses()}
        if all(
            n in statuses
            and statuses[n].alive
            and statuses[n].state == "running"
            and not (statuses[n].owner or "").endswith(f":{dead}")
            for n in PROJECTIONS
        ):
            into.append(time.monotonic() - killed)
            return
        await asyncio.sleep(0.1)
