"""Partitioned projections move to a new generation together: rebuild, reset, new versions."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import pytest

import chronik
from chronik.projections import (
    ErrorPolicy,
    PartitionWorker,
    Projection,
    ProjectionAdmin,
    ProjectionProcessor,
    ReadModel,
)
from chronik.projections.bookkeeping import Plan, load_plan
from chronik.store.base import EventStore, TableWrite
from tests.unit.test_projections import (
    TOTALS,
    _no_requests,
    _true,
    _until,
    fold,
    rows,
    store,
    totals,
)
from tests.unit.test_projections import add as add_event

__all__ = ["store"]  # the memory / SQLite / PostgreSQL fixture

NOPOISON = ErrorPolicy(retries=0)


def workers(
    store: EventStore, projection: Any, n: int = 2, name: str = "w"
) -> list[PartitionWorker]:
    """``n`` workers (fast heartbeats) sharing the partitions of ``projection()``."""
    return [
        PartitionWorker(store, projection(), owner=f"{name}{i}", heartbeat=0.02, lease_ttl=0.5)
        for i in range(n)
    ]


async def plan_is(
    store: EventStore, generation: int, version: int = 1, partitions: int | None = None
) -> bool:
    """Whether the plan serves ``generation`` at ``version`` (and ``partitions``), builds
    nothing, retires nothing."""
    plan = await load_plan(store, "totals")
    return (
        plan is not None
        and plan == Plan(generation, version, plan.partitions)
        and partitions in (None, plan.partitions)
    )


_appended: weakref.WeakKeyDictionary[EventStore, chronik.Position] = weakref.WeakKeyDictionary()


async def add(store: EventStore, agg: str, x: int = 1, **extra: Any) -> chronik.AppendResult:
    """Append an 'added' event and remember its position (PostgreSQL's safe head may not
    cover it yet while another transaction is open)."""
    r = await add_event(store, agg, x, **extra)
    _appended[store] = max(r.position, _appended.get(store, r.position))
    return r


async def settled(store: EventStore, worker: PartitionWorker) -> None:
    """Wait until every partition has applied every event appended so far."""
    head = await store.head()
    assert head is not None
    async with asyncio.timeout(10):
        await worker.wait_for(max(head, _appended.get(store, head)))


async def table_exists(store: EventStore, name: str) -> bool:
    try:
        await store.read_table(name, limit=1)
    except chronik.ReadModelError:
        return False
    return True


async def test_a_rebuild_moves_every_partition_to_a_new_generation_while_appends_go_on(
    store: EventStore,
) -> None:
    """Workers rebuild all partitions into generation 2 while events keep coming; the plan
    switches once, the old tables are dropped, the rows equal the fold, nothing is lost."""
    history = [(f"a{i % 13}", {"x": i}) for i in range(120)]
    seen: list[tuple[str, int]] = []
    for agg, d in history[:60]:
        await add(store, agg, **d)
    one, two = workers(store, lambda: totals(policy=NOPOISON, partitions=4, seen=seen))
    async with one, two:
        await settled(store, one)
        assert await plan_is(store, 1)
        assert len(seen) == 60
        await ProjectionAdmin(store).request("totals", "rebuild")
        for agg, d in history[60:]:
            await add(store, agg, **d)
        await _until(lambda: plan_is(store, 2))
        await settled(store, two)
        assert await rows(store) == fold(history)
        assert not await table_exists(store, "totals__g1")
        statuses = await ProjectionAdmin(store).status_of("totals")
        assert {(s.generation, s.building) for s in statuses} == {(2, None)}
    assert len(seen) >= 60 + 120  # generation 2 applied all 120 events again


async def test_a_reset_to_the_start_serves_a_new_empty_generation_that_refills(
    store: EventStore,
) -> None:
    """reset NAME on a partitioned projection starts generation 2 from the start: its parked
    events are parked again there, generation 1 and its dead letters go."""
    history = [(f"a{i % 7}", {"x": i}) for i in range(40)]
    for agg, d in history:
        await add(store, agg, **d)
    await add(store, "bad", 1, poison=True)
    (worker,) = workers(store, lambda: totals(policy=NOPOISON, partitions=3), 1)
    async with worker:
        await settled(store, worker)
        admin = ProjectionAdmin(store)
        [letter] = await admin.dead_letters("totals")
        assert letter.generation == 1
        await admin.request("totals", "reset")
        await _until(lambda: plan_is(store, 2))
        await settled(store, worker)
        assert await rows(store) == fold(history)
        [again] = await admin.dead_letters("totals")
        assert (again.event_id, again.generation) == (letter.event_id, 2)
        assert not await table_exists(store, "totals__g1")
        assert await store.read_table("chronik_dead_letters", {"generation": 1}) == []


def scaled(version: int, gate: asyncio.Event | None = None) -> Projection:
    """TOTALS with x times 10 ** (version - 1); handlers of partitions other than 0 wait for
    ``gate`` if one is given."""
    p = Projection("totals", tables=[TOTALS], version=version, partitions=4, policy=NOPOISON)

    @p.on("added")
    async def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        if gate is not None and p.partition_of(e.stream) != 0:
            await gate.wait()
        row = await rm.get("totals", id=e.stream.aggregate_id)
        n, total = (row["n"], row["total"]) if row else (0, 0)
        x = e.json()["x"] * 10 ** (version - 1)
        rm.upsert("totals", id=e.stream.aggregate_id, n=n + 1, total=total + x, last_seq=e.sequence)

    return p


async def test_a_new_version_builds_blue_green_and_an_old_process_never_flips_it_back(
    store: EventStore,
) -> None:
    """Version 2 builds generation 2 while version 1's rows keep serving, takes over once
    every partition caught up; a version 1 worker started later changes nothing and steps
    aside for version 2's workers."""
    history = [(f"a{i % 11}", {"x": i}) for i in range(50)]
    for agg, d in history:
        await add(store, agg, **d)
    v2 = [(a, {"x": d["x"] * 10}) for a, d in history]
    (old,) = workers(store, lambda: scaled(1), 1)
    async with old:
        await settled(store, old)
    assert await rows(store) == fold(history)
    gate = asyncio.Event()
    one, two = workers(store, lambda: scaled(2, gate))
    async with one, two:
        try:
            await _until(lambda: _building(store, 2))
            statuses = await ProjectionAdmin(store).status_of("totals")
            assert {s.state for s in statuses} == {"rebuilding"}
            await _until(lambda: _built(store, "totals/0"))
            await asyncio.sleep(0.2)  # ten heartbeats of the leader, its own build caught up
            assert await _building(store, 2)  # the other partitions hold the switch back
            assert await rows(store) == fold(history)  # version 1 serves while version 2 builds
            gate.set()
            await _until(lambda: plan_is(store, 2, version=2))
            await settled(store, one)
            assert await rows(store) == fold(v2)
            assert not await table_exists(store, "totals__g1")
        finally:
            gate.set()  # never leave a worker blocked in a handler
    (stale,) = workers(store, lambda: scaled(1), 1, name="old")
    async with stale:  # version 1 changes nothing, steps aside, and leaves the work to v2
        await _until(lambda: _true(stale.outdated and stale.owned == []))
        assert await plan_is(store, 2, version=2)
        assert await rows(store) == fold(v2)
        s0 = await ProjectionAdmin(store).status("totals/0")
        assert s0.last_error is not None and "runs version 1" in s0.last_error
        await ProjectionAdmin(store).request("totals", "rebuild")
        (current,) = workers(store, lambda: scaled(2), 1, name="new")
        async with current:
            await _until(lambda: _true(current.owned == [0, 1, 2, 3]))
            await add(store, "late", 5)
            await settled(store, current)
            assert await rows(store) == fold([*v2, ("late", {"x": 50})])
            await _until(lambda: plan_is(store, 3, version=2))  # the rebuild, by version 2
        assert stale.owned == []


async def _built(store: EventStore, name: str) -> bool:
    head = await store.head()
    s = await ProjectionAdmin(store).status(name)
    return s.build_position is not None and s.build_position == str(head)


async def _building(store: EventStore, generation: int) -> bool:
    plan = await load_plan(store, "totals")
    if plan is None or plan.building != generation:
        return False
    statuses = await ProjectionAdmin(store).status_of("totals")
    return len(statuses) == 4 and all(s.building == generation for s in statuses)


@pytest.mark.parametrize("action", ["rebuild", "reset"])
async def test_a_request_queued_while_no_worker_runs_is_applied_when_one_starts(
    store: EventStore, action: str
) -> None:
    """A rebuild or reset queued with no worker running reaches every partition on start."""
    history = [(f"a{i % 5}", {"x": i}) for i in range(20)]
    for agg, d in history:
        await add(store, agg, **d)
    (first,) = workers(store, lambda: totals(partitions=2), 1)
    async with first:
        await settled(store, first)
    await ProjectionAdmin(store).request("totals", action)
    (again,) = workers(store, lambda: totals(partitions=2), 1)
    async with again:
        await _until(lambda: plan_is(store, 2))
        await settled(store, again)
        assert await rows(store) == fold(history)
        assert not await table_exists(store, "totals__g1")


async def test_dead_letters_of_a_partitioned_projection_are_retried_and_dropped(
    store: EventStore,
) -> None:
    """retry (all) and drop reach the partitions: fixed, the parked events apply in order;
    dropped, their stream flows on."""
    broken = True
    p_history = [("a", {"x": 1}), ("p", {"x": 2, "poison": True}), ("p", {"x": 3}), ("b", {"x": 4})]

    def projection() -> Projection:
        p = Projection("totals", tables=[TOTALS], partitions=3, policy=NOPOISON)

        @p.on("added")
        async def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
            if broken and e.json().get("poison"):
                raise ValueError("poison")
            row = await rm.get("totals", id=e.stream.aggregate_id)
            n, total = (row["n"], row["total"]) if row else (0, 0)
            x = e.json()["x"]
            rm.upsert(
                "totals", id=e.stream.aggregate_id, n=n + 1, total=total + x, last_seq=e.sequence
            )

        return p

    for agg, d in p_history:
        await add(store, agg, **d)
    admin = ProjectionAdmin(store)
    (worker,) = workers(store, projection, 1)
    async with worker:
        await settled(store, worker)
        assert [(d.stream, d.blocked) for d in await admin.dead_letters("totals")] == [
            ("acc/p", False),
            ("acc/p", True),
        ]
        broken = False
        await admin.request("totals", "retry")
        await _until(lambda: _no_letters(admin))
        assert await rows(store) == fold([(a, {"x": d["x"]}) for a, d in p_history])
        broken = True
        await add(store, "q", 5, poison=True)
        await _until(lambda: _no_letters(admin, False))
        assert await admin.drop_dead_letters("totals") == 1
        await _until(lambda: _no_requests(store))  # each partition reloaded its parked streams
        await add(store, "q", 6)
        await settled(store, worker)
        assert {r["id"]: r["total"] for r in await rows(store)}["q"] == 6


async def _no_letters(admin: ProjectionAdmin, none: bool = True) -> bool:
    return (await admin.dead_letters("totals") == []) is none


async def test_a_new_partition_count_waits_for_a_rebuild_then_splits_anew(
    store: EventStore,
) -> None:
    """Workers with another partition count than the serving generation's advance nothing
    (and say why) until a rebuild; a new version re-splits by itself; no row goes wrong."""
    history = [(f"a{i % 11}", {"x": i}) for i in range(60)]
    for agg, d in history[:30]:
        await add(store, agg, **d)
    (three,) = workers(store, lambda: totals(partitions=3), 1)
    async with three:
        await settled(store, three)
    for agg, d in history[30:]:
        await add(store, agg, **d)
    admin = ProjectionAdmin(store)
    (five,) = workers(store, lambda: totals(partitions=5), 1)
    async with five:
        await _until(lambda: _all_say(admin, "splits totals into 5 partitions", 5))
        assert await rows(store) == fold(history[:30])  # generation 1 serves, as it was
        await admin.request("totals", "rebuild")
        await _until(lambda: plan_is(store, 2, partitions=5))
        await settled(store, five)
        assert await rows(store) == fold(history)
    (two,) = workers(store, lambda: totals(partitions=2, version=2), 1)
    async with two:  # a new version and two partitions: built blue/green without a request
        await _until(lambda: plan_is(store, 3, version=2, partitions=2))
        await settled(store, two)
        assert await rows(store) == fold(history)
        assert not await table_exists(store, "totals__g2")  # rows of totals/2..4 are unheld


async def test_a_request_queued_for_a_partition_of_an_earlier_split_is_pruned(
    store: EventStore,
) -> None:
    """A request fanned out from a status read taken just before a smaller split pruned its
    partitions (so it names one no one will ever run) is pruned too, not left pending."""
    await add(store, "a1")
    (two,) = workers(store, lambda: totals(partitions=2), 1)
    async with two:
        await settled(store, two)
        async with store.transaction() as tx:  # what the race leaves behind
            row = {
                "id": "late.2",
                "projection": "totals/2",
                "action": "rebuild",
                "arg": "",
                "created_at": 0,
            }
            tx.write_tables([TableWrite.upsert("chronik_projection_requests", row, ("id",))])
        await _until(lambda: _no_requests(store))


async def _all_say(admin: ProjectionAdmin, text: str, partitions: int) -> bool:
    statuses = [s for s in await admin.status_of("totals") if s.alive]
    return len(statuses) == partitions and all(text in (s.last_error or "") for s in statuses)


async def test_an_unpartitioned_projection_is_split_by_a_rebuild_and_not_run_unsplit_again(
    store: EventStore,
) -> None:
    """A projection that ran unpartitioned keeps serving when workers take it over, until a
    rebuild splits it; an unpartitioned processor then refuses to start (and lets go)."""
    history = [(f"a{i % 7}", {"x": i}) for i in range(30)]
    for agg, d in history:
        await add(store, agg, **d)
    async with ProjectionProcessor(store, totals(), heartbeat=0.02, lease_ttl=0.5) as single:
        head = await store.head()
        assert head is not None
        await single.wait_for(head)
    admin = ProjectionAdmin(store)
    (worker,) = workers(store, lambda: totals(partitions=3), 1)
    async with worker:
        await _until(lambda: _all_say(admin, "generation 1 was built with 1", 3))
        assert [s.name for s in await admin.statuses()] == [f"totals/{k}" for k in range(3)]
        assert await rows(store) == fold(history)  # still the unpartitioned rows
        await admin.request("totals", "rebuild")
        await _until(lambda: plan_is(store, 2, partitions=3))
        await add(store, "late", 3)
        await settled(store, worker)
        assert await rows(store) == fold([*history, ("late", {"x": 3})])
    unsplit = ProjectionProcessor(store, totals(), heartbeat=0.02, lease_ttl=0.5)
    with pytest.raises(chronik.ConfigurationError, match="runs in partitions"):
        await unsplit.start()
    (again,) = workers(store, lambda: totals(partitions=3), 1)
    async with again:  # partition 0's lease was let go at once
        await _until(lambda: _true(again.owned == [0, 1, 2]))
