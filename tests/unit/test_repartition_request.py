"""Who answers a repartition request: the leader of the split the stored plan serves. A leader
of the old split, still running between a switch and its worker's next heartbeat (its own view
of the plan not yet moved on), leaves the request queued instead of answering it: it used to
publish a repartition of its own split, which the new leader then abandoned."""

from __future__ import annotations

from typing import Any

import chronik
from chronik.projections import Projection, Table
from chronik.projections.bookkeeping import PLANS, REQUESTS, Plan
from chronik.projections.control import decide
from chronik.projections.lanes import LaneView, View
from chronik.projections.repartition import load_pending

NAME = "split"
REQUEST = {"id": "r.0", "projection": f"{NAME}/0", "action": "repartition", "arg": "2"}
SERVES = Plan(generation=1, version=1, partitions=5)


def _view(plan: Plan) -> View:
    """Partition 0 of a processor running ``plan``'s split, which is also its view of the plan."""
    table = Table("t", {"id": str}, primary_key="id")
    p = Projection(NAME, tables=[table], partitions=plan.partitions)
    lane = LaneView(plan.generation, plan.version, False, None, None, True)
    return View(p, 0, f"{NAME}/0", "running", None, plan, False, lane, None)


async def _serving(store: Any) -> None:
    async with store.transaction() as tx:
        tx.write_tables([SERVES.write(NAME)])


async def test_a_leader_of_the_old_split_leaves_the_request_queued() -> None:
    """The store's plan serves 5 partitions, this leader runs (and still sees) 3: no step."""
    async with chronik.open_store("memory://") as store:
        await _serving(store)
        assert await decide(store, _view(SERVES._replace(partitions=3)), REQUEST) is None


async def test_the_leader_of_the_serving_split_publishes_the_repartition() -> None:
    """The same request to the leader running the served 5: the pending row 5 -> 2 and the
    request's delete, committed together."""
    async with chronik.open_store("memory://") as store:
        await _serving(store)
        step = await decide(store, _view(SERVES), REQUEST)
        assert step is not None and step.error is None
        assert sorted((w.table, w.op) for w in step.writes) == [
            (PLANS.name, "upsert"),
            (REQUESTS.name, "delete"),
        ]
        async with store.transaction() as tx:
            tx.write_tables(step.writes)
        pending = await load_pending(store, NAME)
        assert pending is not None and (pending.source, pending.target) == (5, 2)
