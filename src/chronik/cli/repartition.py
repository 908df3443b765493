"""``chronik projections repartition NAME --partitions N``: a new partition count, no rebuild.

Queues the request (``ProjectionAdmin.repartition``: refused up front, naming the reason, when
it cannot be done now), then follows it until the leader, partition 0, has switched every
partition to the new count at one common position, or says why it refused or gave up.
"""

from __future__ import annotations

import asyncio
import time

from chronik.errors import ValidationError
from chronik.projections import ProjectionAdmin
from chronik.projections.bookkeeping import load_plan
from chronik.projections.lanes import checkpoint_name
from chronik.projections.repartition import load_pending
from chronik.store import open_store

__all__ = ["repartition"]

POLL = 0.1  # seconds between two looks at the plan


async def repartition(url: str, name: str, partitions: int, wait: float) -> str:
    """Request the repartition; follow it for up to ``wait`` seconds; say what happened."""
    async with open_store(url, create=False) as store:
        admin = ProjectionAdmin(store)
        alive = any(s.alive for s in await admin.status_of(name))
        request_id = await admin.repartition(name, partitions)
        asked = f"repartition of {name} into {partitions} partitions"
        if not alive:
            return (
                f"{asked} queued: no worker of {name} is running (partition 0 carries it out "
                "when one starts)"
            )
        if wait <= 0:
            return f"{asked} requested"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not await admin.pending(request_id) and await load_pending(store, name) is None:
                plan = await load_plan(store, name)
                if plan is not None and plan.partitions == partitions:
                    at = await store.load_checkpoint(checkpoint_name(name, plan.generation), 0)
                    shown = "the start" if at is None else f"position {at.position}"
                    return f"repartitioned {name}: {partitions} partitions from {shown} on"
                leader = await admin.status(f"{name}/0")
                raise ValidationError(
                    leader.last_error or f"{asked} did not happen", field="partitions"
                )
            await asyncio.sleep(POLL)
        return (
            f"{asked} in progress after {wait:.0f} s: every partition must reach the common "
            f"position first (see chronik projections status {name})"
        )
