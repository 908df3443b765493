"""A projection whose commit lands but whose answer is lost (StoreUnavailable with
outcome_unknown, as when a PostgreSQL primary dies at COMMIT) applies no event twice."""

from __future__ import annotations

import asyncio

import chronik
from chronik import EventData, StreamId
from chronik.messages import AppendResult
from chronik.projections import Projection, ProjectionProcessor, ReadModel, Table, query
from chronik.store.base import WriteUnit
from chronik.store.memory import MemoryEventStore


class LostAnswers(MemoryEventStore):
    """A memory store that commits the next ``lose`` checkpoint units, then raises as if the
    connection had died before their answer arrived (the unit is stored)."""

    lose = 0

    async def _write(self, unit: WriteUnit) -> list[AppendResult]:
        results = await super()._write(unit)
        if unit.checkpoints and self.lose > 0:
            self.lose -= 1
            raise chronik.StoreUnavailable("connection lost at COMMIT", outcome_unknown=True)
        return results


def counting() -> Projection:
    """counts: events per stream, read-modify-write (a repeated batch would count twice)."""
    p = Projection("counts", tables=[Table("counts", {"id": str, "n": int}, primary_key="id")])

    @p.on("added")
    async def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("counts", id=e.stream.aggregate_id)
        rm.upsert("counts", id=e.stream.aggregate_id, n=(row["n"] if row else 0) + 1)

    return p


async def test_a_commit_with_an_unknown_outcome_is_not_applied_twice() -> None:
    """After commits that landed but raised outcome_unknown, the processor reloads its
    checkpoint from the store: the table counts every event once."""
    async with LostAnswers() as store:
        async with ProjectionProcessor(store, counting(), heartbeat=0.01) as proc:
            r = await store.append(StreamId("acc", "a"), [EventData("added", {}) for _ in range(3)])
            async with asyncio.timeout(10):
                await proc.wait_for(r.position)
            for _ in range(2):
                store.lose = 1
                events = [EventData("added", {}) for _ in range(2)]
                r = await store.append(StreamId("acc", "a"), events)
                async with asyncio.timeout(10):
                    await proc.wait_for(r.position)
                assert store.lose == 0  # the answer was lost
        rows = await query(store, "counts", "counts")
        assert [(row["id"], row["n"]) for row in rows] == [("a", 7)]
