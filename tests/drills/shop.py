"""The shop as the drills drive it: shoppers sending commands over HTTP (retrying the same
command id), what they saw, and the checks of the store and read models afterwards."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

import chronik
from chronik.projections import query

ITEMS = [
    {"sku": "book", "price_cents": 1500, "qty": 2},
    {"sku": "pen", "price_cents": 250, "qty": 3},
]


@dataclass
class Tally:
    """What the clients saw: acknowledged commands and every kind of failed answer."""

    acknowledged: dict[str, list[str]] = field(default_factory=dict)  # command id -> event ids
    answers_503: int = 0  # typed "unavailable" answers (allowed for in-flight requests)
    answers_5xx: list[str] = field(default_factory=list)  # any other 5xx: must stay empty
    transport_errors: int = 0  # refused, reset or timed out connections
    rejected: list[str] = field(default_factory=list)  # 4xx answers: must stay empty
    given_up: list[str] = field(default_factory=list)  # command ids never acknowledged
    #: (sent, answered): monotonic times of every attempt answered 200
    ok_at: list[tuple[float, float]] = field(default_factory=list)


def command(domain: str, aggregate_id: str, type_: str, **payload: Any) -> dict[str, Any]:
    """A POST /v1/commands body with a fresh command id."""
    return {
        "domain": domain,
        "aggregate_id": aggregate_id,
        "type": type_,
        "payload": payload,
        "command_id": str(uuid.uuid4()),
    }


async def send(
    http: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
    body: dict[str, Any],
    tally: Tally,
    patience: float = 30.0,
) -> bool:
    """POST one command (to ``http``, or to the client ``http()`` picks for each try); on a
    transport error or a 5xx retry the SAME command id with backoff for up to ``patience``
    seconds; True once acknowledged (200)."""
    give_up = time.monotonic() + patience
    pause = 0.05
    while True:
        sent = time.monotonic()
        try:
            client = http() if callable(http) else http
            answer = await client.post("/v1/commands", json=body, timeout=10.0)
        except httpx.TransportError:
            tally.transport_errors += 1
        else:
            if answer.status_code == 200:
                tally.ok_at.append((sent, time.monotonic()))
                events = answer.json()["events"]
                tally.acknowledged[body["command_id"]] = [e["event_id"] for e in events]
                return True
            if answer.status_code == 503:
                tally.answers_503 += 1
            elif answer.status_code >= 500:
                tally.answers_5xx.append(f"{answer.status_code} {answer.text[:300]}")
            else:
                tally.rejected.append(f"{body['type']}: {answer.status_code} {answer.text[:300]}")
                return False
        if time.monotonic() > give_up:
            tally.given_up.append(body["command_id"])
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


async def shop_client(
    http: httpx.AsyncClient, name: str, tally: Tally, stop: asyncio.Event
) -> None:
    """One shopper: create a customer, then create and complete transactions until ``stop``."""
    body = command("customer", name, "CreateCustomer", name=name, email=f"{name}@x")
    if not await send(http, body, tally):
        return
    k = 0
    while not stop.is_set():
        k += 1
        tx = f"{name}-t{k}"
        created = command("transaction", tx, "CreateTransaction", customer_id=name, items=ITEMS)
        if await send(http, created, tally):
            await send(http, command("transaction", tx, "CompleteTransaction"), tally)


def first_ok_after(tally: Tally, t: float) -> float | None:
    """When the first command attempt sent at or after ``t`` was acknowledged."""
    return min((answered for sent, answered in tally.ok_at if sent >= t), default=None)


# --- checks ----------------------------------------------------------------------------------


def check_acknowledged(events: list[chronik.RecordedEvent], tally: Tally) -> tuple[int, int]:
    """(acknowledged events missing or changed, events stored more than once) for every
    acknowledged command: its events are stored once, caused by that command."""
    by_id = Counter(e.event_id for e in events)
    caused = Counter(e.metadata.causation_id for e in events)
    lost = dup = 0
    for command_id, event_ids in tally.acknowledged.items():
        lost += sum(1 for eid in event_ids if by_id[eid] == 0)
        dup += sum(by_id[eid] - 1 for eid in event_ids if by_id[eid] > 1)
        dup += max(0, caused[command_id] - len(event_ids))
    return lost, dup


def saga_effects(events: list[chronik.RecordedEvent]) -> tuple[int, int, int]:
    """(completed transactions, loyalty commands missing, loyalty commands duplicated): each
    TransactionCompleted must be followed by exactly one LoyaltyPointsAdded of its customer."""
    completed: Counter[str] = Counter()
    added: Counter[str] = Counter()
    causes = Counter(e.metadata.causation_id for e in events if e.type == "LoyaltyPointsAdded")
    for e in events:
        if e.type == "TransactionCompleted":
            completed[e.json()["customer_id"]] += 1
        elif e.type == "LoyaltyPointsAdded":
            added[e.stream.aggregate_id] += 1
    missing = sum(max(0, completed[c] - added[c]) for c in completed)
    duplicated = sum(max(0, added[c] - completed[c]) for c in added)
    duplicated += sum(n - 1 for n in causes.values() if n > 1)
    return sum(completed.values()), missing, duplicated


def shop_fold(events: list[chronik.RecordedEvent]) -> dict[str, list[dict[str, Any]]]:
    """The shop's read models computed afresh from the events."""
    receipts: dict[str, dict[str, Any]] = {}
    summary: dict[str, dict[str, Any]] = {}

    def row(customer_id: str) -> dict[str, Any]:
        empty = {"name": "", "email": "", "loyalty_points": 0, "transactions": 0}
        return summary.setdefault(
            customer_id, {"customer_id": customer_id, **empty, "total_spent_cents": 0}
        )

    for e in events:
        data = e.json()
        if e.type == "CustomerCreated":
            row(e.stream.aggregate_id).update(name=data["name"], email=data["email"])
        elif e.type == "LoyaltyPointsAdded":
            row(e.stream.aggregate_id)["loyalty_points"] += data["points"]
        elif e.type == "TransactionCompleted":
            tx = e.stream.aggregate_id
            receipts[tx] = {
                "transaction_id": tx,
                "customer_id": data["customer_id"],
                "amount_cents": data["amount_cents"],
            }
            r = row(data["customer_id"])
            r["transactions"] += 1
            r["total_spent_cents"] += data["amount_cents"]
    return {
        "receipts": sorted(receipts.values(), key=lambda r: r["transaction_id"]),
        "customer_summary": sorted(summary.values(), key=lambda r: r["customer_id"]),
    }


async def shop_read_models(store: chronik.EventStore) -> dict[str, list[dict[str, Any]]]:
    return {
        "receipts": await query(store, "receipts", "receipts", order_by=("transaction_id",)),
        "customer_summary": await query(
            store, "customer_summary", "customer_summary", order_by=("customer_id",)
        ),
    }
