"""W12: saga round trip in-process on SQLite: TransactionCompleted -> loyalty saga ->
AddLoyaltyPoints -> LoyaltyPointsAdded, latency from the completing command to the points."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import chronik
from bench import raw
from chronik.projections import ProjectionRunner
from examples.shop.app import build_app, projections

ROUNDS = 200


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def chronik_rounds(path: str, rounds: int) -> list[float]:
    app = build_app(f"sqlite:///{path}")
    latencies: list[float] = []
    async with app, ProjectionRunner(app.store, projections(app)):
        points = app.store.subscribe(await app.store.head(), types=["LoyaltyPointsAdded"])
        items = [{"sku": "b", "price_cents": 1500, "qty": 1}]
        async with points:
            for i in range(rounds):
                c, t = f"c{i}", f"t{i}"
                await app.dispatch(
                    chronik.Command(
                        domain="customer",
                        aggregate_id=c,
                        type="CreateCustomer",
                        payload={"name": "A", "email": "e"},
                    )
                )
                await app.dispatch(
                    chronik.Command(
                        domain="transaction",
                        aggregate_id=t,
                        type="CreateTransaction",
                        payload={"customer_id": c, "items": items},
                    )
                )
                start = time.perf_counter()
                await app.dispatch(
                    chronik.Command(
                        domain="transaction", aggregate_id=t, type="CompleteTransaction"
                    )
                )
                async with asyncio.timeout(10):
                    event = await anext(points)
                assert event.stream.aggregate_id == c
                latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def raw_rounds(path: str, rounds: int) -> list[float]:
    """The same two appends (completion, then points) with plain sqlite3, back to back."""
    conn = raw.connect(path)
    latencies = []
    for i in range(rounds):
        start = time.perf_counter()
        raw.append(conn, f"t{i}", [{"customer_id": f"c{i}", "amount_cents": 1500}], None)
        raw.append(conn, f"c{i}", [{"points": 15}], None)
        latencies.append((time.perf_counter() - start) * 1000)
    conn.close()
    return latencies


def run_all(runs: int, quick: bool, emit: Any) -> None:
    """Emit W12 p50 and p99."""
    rounds = 40 if quick else ROUNDS
    log("W12 saga round trip ...")
    mine: list[list[float]] = []
    theirs: list[list[float]] = []
    for _ in range(runs):
        d = tempfile.mkdtemp(prefix="chronik-w12-")
        try:
            mine.append(asyncio.run(chronik_rounds(os.path.join(d, "a.db"), rounds)))
            theirs.append(raw_rounds(os.path.join(d, "b.db"), rounds))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    note = (
        f"{rounds} rounds: CompleteTransaction -> loyalty saga -> AddLoyaltyPoints -> "
        "LoyaltyPointsAdded seen by a subscriber; raw = the two appends with sqlite3; "
        "target p99 < 50 ms"
    )
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        emit(
            f"W12-saga-{name}",
            "ms",
            [pct(r, q) for r in mine],
            [pct(r, q) for r in theirs],
            duration=True,
            note=note,
        )
