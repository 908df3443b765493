"""The conformance suite's failure-isolation tests: bad values and faults fail one unit alone.

A mixin of ``chronik.testing.conformance.EventStoreConformance``; use that class.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

import chronik
from chronik import EventData, StreamId
from chronik.store.base import EventStore, TableSpec, TableWrite
from chronik.testing.conformance_state import collect, ev
from chronik.testing.faults import inject, touches

__all__ = ["FaultConformance"]

_COUNTS = TableSpec("rm_counts", (("id", "TEXT"), ("n", "INTEGER"), ("x", "REAL")), ("id",))


async def _unit(store: EventStore, i: int, row: dict[str, Any] | None = None) -> None:
    """One unit: an event on stream counted/c<i> and the row ``row`` (default: n = i)."""
    async with store.transaction() as tx:
        tx.append(StreamId("counted", f"c{i}"), [EventData("counted", {"n": i})])
        values = {"id": f"c{i}", "n": i} if row is None else {"id": f"c{i}", **row}
        tx.write_tables([TableWrite.upsert(_COUNTS.name, values, ("id",))])


class FaultConformance:
    """Values no column can hold, and exceptions of any type while writing, fail one unit."""

    async def _ensure_counts(self, store: EventStore) -> None:
        if not store.supports_tables:
            pytest.skip("this adapter has no read-model tables")
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("ensure", _COUNTS.name, spec=_COUNTS)])

    async def test_values_no_column_can_hold_fail_their_unit_alone(self, store: EventStore) -> None:
        """An int outside int64 (10**30: the wedge of issue 14), NaN, NUL or an object fails its
        unit with ReadModelError naming table and column; the others commit, the store works."""
        await self._ensure_counts(store)
        bad: list[dict[str, Any]] = [
            {"n": 10**30},
            {"n": -(2**63) - 1},
            {"x": math.nan},
            {"id": "c\x00"},
            {"n": object()},
        ]
        outcomes = await asyncio.gather(
            *(_unit(store, i, bad[i // 2] if i % 2 else None) for i in range(2 * len(bad))),
            return_exceptions=True,
        )
        for i, outcome in enumerate(outcomes):
            if i % 2 == 0:
                assert outcome is None, outcome
                continue
            assert isinstance(outcome, chronik.ReadModelError), outcome
            column = next(iter(bad[i // 2]))
            assert outcome.table == _COUNTS.name and outcome.column == column
            assert column in str(outcome)
            assert await store.stream_version(StreamId("counted", f"c{i}")) is None
        rows = await store.read_table(_COUNTS.name, order_by=("n",))
        assert [r["id"] for r in rows] == [f"c{i}" for i in range(0, 2 * len(bad), 2)]
        await store.append(StreamId("counted", "after"), [ev(0)])  # not wedged
        await _unit(store, 99, {"n": 2**63 - 1, "x": math.inf})  # the limits themselves fit
        (row,) = await store.read_table(_COUNTS.name, {"id": "c99"})
        assert (row["n"], row["x"]) == (2**63 - 1, math.inf)
        with pytest.raises(chronik.ValidationError):
            await store.read_table(_COUNTS.name, {"n": 10**30})

    @pytest.mark.parametrize(
        "error",
        [OverflowError, TypeError, MemoryError, asyncio.CancelledError, RuntimeError],
        ids=lambda e: e.__name__,
    )
    async def test_an_exception_of_any_type_while_writing_fails_its_unit_alone(
        self, store: EventStore, error: type[BaseException]
    ) -> None:
        """Whatever a unit's write raises fails that unit (typed), while concurrent units
        commit; nothing of it is stored and the store keeps working (no wedged transaction)."""
        await self._ensure_counts(store)
        victim = StreamId("counted", "c3")
        with inject(store) as faults:
            faults.fail("tables", error, where=touches(victim))
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(_unit(store, i) for i in range(6)), return_exceptions=True), 10
            )
        assert [f[0] for f in faults.fired] == ["tables"]
        for i, outcome in enumerate(outcomes):
            if i == 3:
                assert isinstance(outcome, chronik.StoreUnavailable), outcome
                assert not outcome.outcome_unknown
            else:
                assert outcome is None, outcome
        assert await store.stream_version(victim) is None
        assert await store.read_table(_COUNTS.name, {"id": "c3"}) == []
        assert len(await store.read_table(_COUNTS.name)) == 5
        await _unit(store, 3)  # the same unit again, without the fault: it commits
        assert [e.json()["n"] for e in await collect(store.read_stream(victim))] == [3]
        assert store.health.ok

    async def test_a_cancelled_caller_does_not_wedge_the_store(self, store: EventStore) -> None:
        """Callers cancelled while their units wait or commit leave each unit whole or absent;
        the others and every later write go through."""
        await self._ensure_counts(store)
        tasks = [asyncio.create_task(_unit(store, i)) for i in range(8)]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        for i, outcome in enumerate(done):
            assert outcome is None or (i % 2 == 0 and isinstance(outcome, asyncio.CancelledError))
            stored = await store.stream_version(StreamId("counted", f"c{i}")) is not None
            rows = await store.read_table(_COUNTS.name, {"id": f"c{i}"})
            assert stored == bool(rows)  # all or nothing
        await _unit(store, 100)
        assert await store.stream_version(StreamId("counted", "c100")) == 0
