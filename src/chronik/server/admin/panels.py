"""The sagas & deadlines and outbox panels: what the server's sagas hold, and the outbox backlog.

Sagas are found on the projection runners (the server's, and the app's own for projections
added with ``app.add_projection``: a saga runs as a projection whose ``saga`` attribute is the
``chronik.sagas.Saga``); their instances and deadlines are rows of the saga's own tables.
The outbox is read with ``chronik.outbox.OutboxAdmin`` from the store, whoever dispatches it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from chronik.errors import ReadModelError
from chronik.projections import Projection, ProjectionRunner, query
from chronik.projections.bookkeeping import LEASES
from chronik.store.base import EventStore

__all__ = ["DeadlineView", "SagaView", "outbox_context", "sagas_context"]

ROWS: Final = 100  # instances / deadlines / messages listed at most


def _utc(us: int | None) -> str:
    if not us:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(us / 1e6))


def _pretty(raw: Any) -> str:
    if raw is None:
        return "null"
    text = bytes(raw).decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else raw
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(text)


@dataclass
class DeadlineView:
    """A pending deadline of a saga instance."""

    instance_id: str
    name: str
    due: str
    overdue: bool
    payload: str


@dataclass
class SagaView:
    """One saga: its instances (state pretty-printed) and pending deadlines."""

    name: str
    instances: list[dict[str, Any]] = field(default_factory=list)
    active: int = 0
    ended: int = 0
    deadlines: list[DeadlineView] = field(default_factory=list)
    error: str = ""


async def _lease_holder(store: EventStore, name: str) -> str | None:
    try:
        rows = await store.read_table(LEASES.name, {"name": name}, limit=1)
    except ReadModelError:
        return None
    now_us = time.time_ns() // 1000
    return rows[0]["owner"] if rows and rows[0]["expires_at"] > now_us else None


async def _scheduler(store: EventStore, owners: Sequence[str]) -> str | None:
    """Who fires the deadlines (a lease per owner table): the holders, or None."""
    from chronik.deadlines import AGGREGATE_DEADLINES, lease_name

    names = {AGGREGATE_DEADLINES, *owners}
    found = [await _lease_holder(store, lease_name(n)) for n in sorted(names)]
    holders = sorted({h for h in found if h is not None})
    return ", ".join(holders) or None


def _projections(runners: Sequence[ProjectionRunner]) -> dict[str, Projection]:
    return {n: p.projection for r in runners for n, p in r.processors.items()}


async def sagas_context(store: EventStore, runners: Sequence[ProjectionRunner]) -> dict[str, Any]:
    """The sagas this server runs with their instances and deadlines, the aggregates'
    deadlines, and which process's deadline scheduler holds the lease."""
    from chronik.sagas import Saga

    found = _projections(runners)
    sagas = [s for p in found.values() if isinstance(s := getattr(p, "saga", None), Saga)]
    views: list[SagaView] = []
    now_us = time.time_ns() // 1000
    for saga in sagas:
        view = SagaView(saga.name)
        try:
            rows = await query(store, saga.name, saga.instances.name, order_by=("instance_id",))
            due = await query(store, saga.name, saga.deadlines.name, order_by=("due_us",))
        except ReadModelError:
            view.error = "its tables do not exist yet (the saga has not run)"
            views.append(view)
            continue
        view.ended = sum(1 for r in rows if r["ended"])
        view.active = len(rows) - view.ended
        view.instances = [
            {
                "instance_id": r["instance_id"],
                "ended": bool(r["ended"]),
                "state": _pretty(r["state"]),
            }
            for r in rows[:ROWS]
        ]
        view.deadlines = [
            DeadlineView(
                r["instance_id"],
                r["name"],
                _utc(r["due_us"]),
                r["due_us"] <= now_us,
                _pretty(r["payload"]),
            )
            for r in due[:ROWS]
        ]
        views.append(view)
    return {
        "sagas": views,
        "aggregate_deadlines": await _aggregate_deadlines(store, found, now_us),
        "scheduler": await _scheduler(store, [s.name for s in sagas]),
        "rows": ROWS,
    }


async def _aggregate_deadlines(
    store: EventStore, found: dict[str, Projection], now_us: int
) -> list[DeadlineView] | None:
    """Pending deadlines of aggregates (kept by the chronik_deadlines projection), or None
    when this server does not run that projection."""
    from chronik.deadlines import AGGREGATE_DEADLINES

    projection = found.get(AGGREGATE_DEADLINES)
    if projection is None or not projection.tables:
        return None
    table = next(iter(projection.tables))
    try:
        rows = await query(store, AGGREGATE_DEADLINES, table, order_by=("due_us",), limit=ROWS)
    except ReadModelError:
        return []
    return [
        DeadlineView(
            r["instance_id"],
            f"{r['name']} -> {r['command']}" if r.get("command") else r["name"],
            _utc(r["due_us"]),
            r["due_us"] <= now_us,
            _pretty(r["payload"]),
        )
        for r in rows
    ]


async def outbox_context(store: EventStore, flash: str = "") -> dict[str, Any]:
    """The outbox's counts, dispatcher, and its pending and failed messages."""
    from chronik.outbox import OutboxAdmin

    admin = OutboxAdmin(store)
    status = await admin.status()
    messages = [
        {**m, "created": _utc(m["created_us"]), "body": _pretty(m["body"])}
        for state in ("failed", "pending")
        for m in await admin.messages(state, ROWS)
    ]
    return {"status": status, "messages": messages, "rows": ROWS, "flash": flash}
