"""Projections the drills' `chronik serve` processes run (``projections: tests.drills.apps:...``).

``counts``: per stream, the number of ``added`` events, the sum of their ``x`` and the last
sequence applied; an event applied twice raises (and is parked, which the drills count). Each
event takes ``CHRONIK_DRILL_DELAY`` seconds, so a rebuild lasts long enough to be killed.
"""

from __future__ import annotations

import asyncio
import os

import chronik
from chronik.projections import ErrorPolicy, Projection, ReadModel, Table

COUNTS = Table("counts", {"id": str, "n": int, "total": int, "last_seq": int}, primary_key="id")


def counts_projections(app: chronik.Chronik) -> list[Projection]:
    """The one unpartitioned ``counts`` projection."""
    delay = float(os.environ.get("CHRONIK_DRILL_DELAY", "0") or 0)
    p = Projection(
        "counts", tables=[COUNTS], batch_size=50, policy=ErrorPolicy(retries=0, then="park")
    )

    @p.on("added")
    async def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        if delay:
            await asyncio.sleep(delay)
        row = await rm.get("counts", id=e.stream.aggregate_id)
        if row is not None and row["last_seq"] >= e.sequence:
            raise AssertionError(f"{e.stream}#{e.sequence} applied twice")
        n, total = (row["n"], row["total"]) if row else (0, 0)
        x = e.json()["x"]
        rm.upsert("counts", id=e.stream.aggregate_id, n=n + 1, total=total + x, last_seq=e.sequence)

    return [p]
