"""Projections: events in, read models out, effectively once.

Declare a ``Projection`` with its ``Table``s and handlers, run it with a ``ProjectionRunner``
(or one ``ProjectionProcessor``), read its rows with ``query``; ``ProjectionAdmin`` shows
status and sends pause / resume / reset / rebuild / retry requests from any process.

Inside: ``processor`` is the one module that commits for a projection and changes a
processor's state; ``control`` (requests), ``plan`` (partitions), ``batch`` (a page through the
handlers), ``lanes`` and ``dead_letters`` take values and return decisions or table writes;
``bookkeeping`` holds the system tables' rows, ``admin`` the operator actions, ``workers`` and
``runner`` run processors. Modules here import ``chronik.store`` (the port, never an adapter),
``chronik.messages``, ``chronik.errors`` and each other in that order, never a server or CLI.
"""

from __future__ import annotations

from typing import Any

from chronik.errors import ReadModelError
from chronik.projections.admin import ProjectionAdmin, ProjectionStatus
from chronik.projections.bookkeeping import STATUS, load_plan
from chronik.projections.dead_letters import DeadLetter
from chronik.projections.processor import ProjectionProcessor
from chronik.projections.projection import ErrorPolicy, Handler, Projection
from chronik.projections.readmodel import ReadModel, Table, physical_name
from chronik.projections.runner import ProjectionRunner
from chronik.projections.workers import PartitionWorker
from chronik.store.base import EventStore

__all__ = [
    "DeadLetter",
    "ErrorPolicy",
    "Handler",
    "PartitionWorker",
    "Projection",
    "ProjectionAdmin",
    "ProjectionProcessor",
    "ProjectionRunner",
    "ProjectionStatus",
    "ReadModel",
    "Table",
    "query",
]


async def query(
    store: EventStore,
    projection: str,
    table: str,
    where: dict[str, Any] | None = None,
    order_by: tuple[str, ...] = (),
    limit: int | None = None,
    *,
    after: dict[str, Any] | None = None,
    tenant: str | None = None,
) -> list[dict[str, Any]]:
    """Committed rows of a projection's table, from the generation that serves now
    (``where``, ``order_by``, ``limit``, ``after`` and ``tenant`` as ``EventStore.read_table``
    takes them)."""
    for attempt in range(2):
        rows = await store.read_table(STATUS.name, {"name": projection}, limit=1)
        if rows:
            generation = rows[0]["generation"]
        else:  # partitioned: the generation its plan serves
            plan = await load_plan(store, projection)
            generation = plan.generation if plan is not None else 1
        try:
            return await store.read_table(
                physical_name(table, generation), where, order_by, limit, after=after, tenant=tenant
            )
        except ReadModelError:
            if attempt:  # the generation may have been swapped under us: look once more
                raise
    raise AssertionError("unreachable")
