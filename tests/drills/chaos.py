"""The cluster chaos drill's clients and checks: shoppers sending commands over HTTP to random
server nodes (retrying the SAME command id on another node after an unknown outcome), and the
checks of the deadlines and the outbox consumer afterwards (the shop's own checks are in
tests.drills.shop)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

import chronik
from chronik.deadlines import DEADLINE_FIRED
from chronik.projections import ProjectionAdmin, query
from tests.drills.chaos_app import AUTO_SKU, CONSUMED
from tests.drills.shop import ITEMS, Tally, command, send

NEW_CUSTOMER_EVERY = 5  # transactions
AUTO_ITEMS = [*ITEMS, {"sku": AUTO_SKU, "price_cents": 100, "qty": 1}]


async def send_any(
    nodes: list[httpx.AsyncClient],
    rng: random.Random,
    body: dict[str, Any],
    tally: Tally,
    patience: float = 60.0,
) -> bool:
    """POST one command to a random node; on a transport error or a 5xx retry the SAME command
    id on a random node with backoff for up to ``patience`` s; True once acknowledged."""
    return await send(lambda: rng.choice(nodes), body, tally, patience)


async def shopper(
    nodes: list[httpx.AsyncClient],
    name: str,
    seed: int,
    tally: Tally,
    auto: set[str],
    stop: asyncio.Event,
    *,
    pace: float = 0.0,
) -> None:
    """Create a customer and five transactions for it, again and again until ``stop``: odd
    ones completed by the shopper, even ones (with an ``auto`` item) left to the autocomplete
    saga's deadline; ``pace`` seconds apart."""
    rng = random.Random(seed)
    customer = ""
    k = 0
    while not stop.is_set():
        if k % NEW_CUSTOMER_EVERY == 0:  # a CustomerCreated is an outbox message
            who = f"{name}-{k // NEW_CUSTOMER_EVERY}"
            body = command("customer", who, "CreateCustomer", name=who, email=f"{who}@x")
            if not await send_any(nodes, rng, body, tally):
                return
            customer = who
        k += 1
        tx = f"{name}-t{k}"
        later = k % 2 == 0
        items = AUTO_ITEMS if later else ITEMS
        created = command("transaction", tx, "CreateTransaction", customer_id=customer, items=items)
        if not await send_any(nodes, rng, created, tally):
            continue
        if later:
            auto.add(tx)
        else:
            await send_any(nodes, rng, command("transaction", tx, "CompleteTransaction"), tally)
        if pace:
            await asyncio.sleep(pace)


def deadline_problems(events: list[chronik.RecordedEvent], auto: set[str]) -> list[str]:
    """Every acknowledged ``auto`` transaction: one DeadlineFired, one TransactionCompleted
    caused by the saga; no other transaction has a fired deadline."""
    fired = Counter(
        e.json()["instance_id"]
        for e in events
        if e.type == DEADLINE_FIRED and e.json()["owner"] == "autocomplete"
    )
    completed = Counter(e.stream.aggregate_id for e in events if e.type == "TransactionCompleted")
    problems = [f"{tx}: fired {fired[tx]} times" for tx in sorted(auto) if fired[tx] != 1]
    problems += [
        f"{tx}: completed {completed[tx]} times" for tx in sorted(auto) if completed[tx] != 1
    ]
    problems += [f"{tx}: fired but not auto" for tx in fired if tx not in auto]
    return problems


def outbox_problems(events: list[chronik.RecordedEvent]) -> tuple[int, list[str]]:
    """(messages, problems): every CustomerCreated (an outbox message with its event id) was
    consumed exactly once, and nothing else was."""
    expected = {e.event_id for e in events if e.type == "CustomerCreated"}
    consumed = Counter(e.json()["message_id"] for e in events if e.type == CONSUMED)
    problems = [f"{m}: consumed {consumed[m]} times" for m in sorted(expected) if consumed[m] != 1]
    problems += [f"{m}: consumed, never sent" for m in consumed if m not in expected]
    return len(expected), problems


async def outbox_consumed(store: chronik.EventStore) -> bool:
    """True once every CustomerCreated has its consumed event."""
    events = [e async for e in store.read_all()]
    expected = {e.event_id for e in events if e.type == "CustomerCreated"}
    return expected <= {e.json()["message_id"] for e in events if e.type == CONSUMED}


async def deadlines_done(store: chronik.EventStore, auto: set[str]) -> bool:
    """True once every acknowledged auto transaction is completed."""
    done = {
        e.stream.aggregate_id
        async for e in store.read_all()
        if e.type == "TransactionCompleted" and e.stream.domain == "transaction"
    }
    return auto <= done


async def settle(check: Callable[[], Awaitable[bool]], timeout: float) -> float | None:
    """Poll ``check`` every second (each look reads the whole log) until true: the seconds it
    took, or None if it was not true within ``timeout`` (the checks then say what is wrong)."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            return None
        await asyncio.sleep(1.0)
    return round(time.monotonic() - start, 1)


async def stuck_deadlines(
    store: chronik.EventStore, events: list[chronik.RecordedEvent], auto: set[str]
) -> dict[str, Any]:
    """Why auto transactions are not completed: per transaction (up to 5) its fired events,
    its saga instance row and its pending deadline row; and the projections' statuses."""
    completed = {e.stream.aggregate_id for e in events if e.type == "TransactionCompleted"}
    missing = sorted(auto - completed)
    fired = Counter(
        e.json()["instance_id"]
        for e in events
        if e.type == DEADLINE_FIRED and e.json()["owner"] == "autocomplete"
    )
    out: dict[str, Any] = {"missing": len(missing), "examples": {}}
    for tx in missing[:5]:
        instance = await _rows(store, "autocomplete_instances", instance_id=tx)
        pending = await _rows(store, "autocomplete_deadlines", instance_id=tx)
        out["examples"][tx] = {
            "fired": fired[tx],
            "instance": [{"ended": r["ended"]} for r in instance],
            "pending_due_us": [r["due_us"] for r in pending],
        }
    out["projections"] = [
        f"{s.name} {s.state} alive={s.alive} lag={s.lag_events} owner={s.owner} "
        f"error={s.last_error}"
        for s in await ProjectionAdmin(store).statuses()
    ]
    out["now_us"] = int(time.time() * 1_000_000)
    return out


async def _rows(store: chronik.EventStore, table: str, **where: Any) -> list[dict[str, Any]]:
    try:
        return await query(store, "autocomplete", table, where)
    except Exception as exc:  # a diagnostic never hides the failure it explains
        return [{"error": repr(exc), "ended": None, "due_us": None}]


def latency_ms(tally: Tally) -> dict[str, float]:
    """Median and 99th percentile of the acknowledged attempts' round trips, in ms."""
    took = sorted((answered - sent) * 1000 for sent, answered in tally.ok_at)
    if not took:
        return {}
    p99 = took[min(len(took) - 1, int(len(took) * 0.99))]
    return {"p50": round(statistics.median(took), 1), "p99": round(p99, 1)}
