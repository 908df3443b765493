"""Repartition: a partitioned projection changes its partition count without a rebuild.

Workers share the partitions while events keep coming; ``ProjectionAdmin.repartition`` stops
every partition at one common position, switches the plan and the fenced checkpoints in one
unit of work, and the workers run the new split. The rows must be what a rebuild produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chronik
from chronik.projections import (
    ErrorPolicy,
    PartitionWorker,
    Projection,
    ProjectionAdmin,
    ReadModel,
    Table,
    query,
)
from chronik.projections.bookkeeping import load_plan
from chronik.projections.repartition import load_layout, load_pending
from chronik.store.base import EventStore

ROWS = Table("seq", {"id": str, "n": int, "digest": int, "last_seq": int}, primary_key="id")
MOD = 1_000_000_007


def projection(partitions: int, violations: list[str], replay: Any = "repeat") -> Projection:
    """Per stream an order-sensitive digest of its events; a gap or a repeat is recorded."""
    p = Projection(
        "seqs",
        tables=[ROWS],
        partitions=partitions,
        batch_size=5,
        policy=ErrorPolicy(retries=0, then="park"),
        replay=replay,
    )

    @p.on("tick")
    async def tick(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        if e.json().get("poison"):
            raise ValueError("poison")
        row = await rm.get("seq", id=e.stream.aggregate_id)
        last = row["last_seq"] if row else -1
        if e.sequence != last + 1:
            violations.append(f"{e.stream.aggregate_id}#{e.sequence} after #{last}")
        n, digest = (row["n"], row["digest"]) if row else (0, 7)
        rm.upsert(
            "seq",
            id=e.stream.aggregate_id,
            n=n + 1,
            digest=(digest * 31 + e.json()["x"]) % MOD,
            last_seq=e.sequence,
        )

    return p


def expected(events: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """The rows a rebuild from scratch must produce from these (stream, x) events."""
    out: dict[str, dict[str, Any]] = {}
    for agg, x in events:
        r = out.setdefault(agg, {"id": agg, "n": 0, "digest": 7, "last_seq": -1})
        r["n"] += 1
        r["digest"] = (r["digest"] * 31 + x) % MOD
        r["last_seq"] += 1
    return sorted(out.values(), key=lambda r: r["id"])


def make_workers(
    store: EventStore, partitions: int, violations: list[str], n: int = 2
) -> list[PartitionWorker]:
    """``n`` workers with fast heartbeats."""
    return [
        PartitionWorker(
            store,
            projection(partitions, violations),
            owner=f"w{i}",
            heartbeat=0.02,
            lease_ttl=0.5,
        )
        for i in range(n)
    ]


async def append(store: EventStore, events: list[tuple[str, int]]) -> chronik.Position:
    """Append the (stream, x) events one by one; the last position."""
    last = None
    for agg, x in events:
        r = await store.append(chronik.StreamId("acc", agg), [chronik.EventData("tick", {"x": x})])
        last = r.position
    assert last is not None
    return last


async def until(check: Any, seconds: float = 15.0) -> None:
    """Poll ``check()`` until true (fails after ``seconds``)."""
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.01)


async def split_is(store: EventStore, partitions: int, workers: list[PartitionWorker]) -> bool:
    """Whether the plan serves ``partitions``, nothing is pending, and every worker runs it."""
    plan = await load_plan(store, "seqs")
    return (
        plan is not None
        and plan.partitions == partitions
        and await load_pending(store, "seqs") is None
        and all(len(w.processors) == partitions for w in workers)
        and sorted(k for w in workers for k in w.owned) == list(range(partitions))
    )


async def rows(store: EventStore) -> list[dict[str, Any]]:
    return await query(store, "seqs", "seq", order_by=("id",))


async def settled(store: EventStore, worker: PartitionWorker, at: chronik.Position) -> None:
    async with asyncio.timeout(15):
        await worker.wait_for(at)


@pytest.fixture
async def store() -> Any:
    async with chronik.open_store("memory://") as s:
        yield s


async def test_repartition_under_appends_equals_a_rebuild(store: EventStore) -> None:
    """3 -> 5 -> 2 partitions while another task appends: no event twice or out of order, the
    rows equal the fold, then a rebuild of the same events produces the very same rows."""
    violations: list[str] = []
    rng = random.Random(7)
    events = [(f"s{rng.randrange(23)}", rng.randrange(1000)) for _ in range(300)]
    await append(store, events)
    workers = make_workers(store, 3, violations)
    admin = ProjectionAdmin(store)
    stop = asyncio.Event()

    async def keep_appending() -> None:
        while not stop.is_set():
            more = [(f"s{rng.randrange(23)}", rng.randrange(1000)) for _ in range(3)]
            await append(store, more)
            events.extend(more)
            await asyncio.sleep(0.002)

    async with contextlib.AsyncExitStack() as stack:
        for w in workers:
            await stack.enter_async_context(w)
        await until(lambda: split_is(store, 3, workers))
        feeder = asyncio.ensure_future(keep_appending())
        await admin.repartition("seqs", 5)
        await until(lambda: split_is(store, 5, workers))
        assert await load_layout(store, "seqs") == (1, 1, 5)
        await admin.repartition("seqs", 2)
        await until(lambda: split_is(store, 2, workers))
        stop.set()
        await feeder
        await settled(store, workers[0], await append(store, [("last", 1)]))
        events.append(("last", 1))
        assert violations == []
        repartitioned = await rows(store)
        assert repartitioned == expected(events)
        assert {w.processors[0].owner.split("~")[0] for w in workers} == {"r2"}
        await admin.request("seqs", "rebuild")
        await until(lambda: _serves(store, 2))
        await settled(store, workers[0], await store.head() or chronik.Position(0))
        assert await rows(store) == repartitioned
        assert (await load_plan(store, "seqs")).partitions == 2  # type: ignore[union-attr]
        assert await admin.dead_letters("seqs") == []


async def _serves(store: EventStore, generation: int) -> bool:
    plan = await load_plan(store, "seqs")
    return plan is not None and plan.generation == generation and plan.building is None


async def test_the_old_split_is_fenced_after_the_switch(store: EventStore) -> None:
    """A checkpoint write with the lease epoch a partition of the old split held is refused
    once the switch committed (CheckpointFenced): the old split can never write again."""
    violations: list[str] = []
    await append(store, [(f"s{i}", i) for i in range(40)])
    workers = make_workers(store, 3, violations)
    async with workers[0], workers[1]:
        await until(lambda: split_is(store, 3, workers))
        old = {lease.partition: lease.epoch for lease in await _leases(store)}
        await ProjectionAdmin(store).repartition("seqs", 4)
        await until(lambda: split_is(store, 4, workers))
        head = await store.head()
        assert head is not None
        for k, epoch in old.items():
            with pytest.raises(chronik.CheckpointFenced):
                await store.save_checkpoint("projection:seqs:g1", head, k, epoch)
        assert violations == []


async def _leases(store: EventStore) -> list[Any]:
    from chronik.store import leases

    return [x for x in await leases.holders(store, "seqs") if x.valid()]


async def test_repartition_refusals_name_the_reason(store: EventStore) -> None:
    """Counts out of range, the same count, a paused partition, dead letters, a projection that
    never ran partitioned, replay='refuse': refused with a ValidationError naming the field."""
    admin = ProjectionAdmin(store)
    violations: list[str] = []
    with pytest.raises(chronik.UnknownProjection):
        await admin.repartition("seqs", 3)
    await append(store, [("a", 1), ("b", 2)])
    (worker,) = make_workers(store, 2, violations, 1)
    async with worker:
        await until(lambda: split_is(store, 2, [worker]))
        for bad in (1, 257, "3", True):
            with pytest.raises(chronik.ValidationError) as info:
                await admin.repartition("seqs", bad)
            assert info.value.field == "partitions"
        with pytest.raises(chronik.ValidationError, match="already runs 2 partitions"):
            await admin.repartition("seqs", 2)
        await admin.request("seqs", "pause")
        await until(lambda: _all_paused(admin))
        with pytest.raises(chronik.ValidationError, match="paused: resume it first"):
            await admin.repartition("seqs", 3)
        await admin.request("seqs", "resume")
        await until(lambda: _none_paused(admin))
        poison = await store.append(
            chronik.StreamId("acc", "a"), [chronik.EventData("tick", {"x": 0, "poison": True})]
        )
        await settled(store, worker, poison.position)
        with pytest.raises(chronik.ValidationError, match="dead letters: retry or drop"):
            await admin.repartition("seqs", 3)
    async with chronik.open_store("memory://") as other:
        await append(other, [("a", 1)])
        unsplit = Projection("plain", tables=[Table("pl", {"id": str}, primary_key="id")])
        unsplit.on("tick")(lambda e, rm: None)
        async with chronik.projections.ProjectionProcessor(other, unsplit, heartbeat=0.02):
            await until(lambda: _has_status(other, "plain"))
            with pytest.raises(chronik.ValidationError, match="does not run in partitions") as i:
                await ProjectionAdmin(other).repartition("plain", 3)
            assert i.value.field == "name"


async def test_a_replay_refuse_projection_is_refused_by_its_leader(store: EventStore) -> None:
    """replay='refuse' keeps replay marks per partition: the leader refuses and says why."""
    violations: list[str] = []
    await append(store, [("a", 1)])
    worker = PartitionWorker(
        store, projection(2, violations, replay="refuse"), owner="w", heartbeat=0.02, lease_ttl=0.5
    )
    admin = ProjectionAdmin(store)
    async with worker:
        await until(lambda: split_is(store, 2, [worker]))
        await admin.repartition("seqs", 3)
        await until(lambda: _error_of(admin, "replay='refuse'"))
        assert (await load_plan(store, "seqs")).partitions == 2  # type: ignore[union-attr]
        assert await load_pending(store, "seqs") is None


async def _all_paused(admin: ProjectionAdmin) -> bool:
    return all(s.state == "paused" for s in await admin.status_of("seqs"))


async def _none_paused(admin: ProjectionAdmin) -> bool:
    return all(s.state != "paused" for s in await admin.status_of("seqs"))


async def _has_status(store: EventStore, name: str) -> bool:
    return name in await ProjectionAdmin(store).names()


async def _error_of(admin: ProjectionAdmin, text: str) -> bool:
    s = await admin.status("seqs/0")
    return text in (s.last_error or "")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 99)), min_size=1, max_size=60),
    st.lists(st.integers(2, 6), min_size=1, max_size=3),
    st.integers(1, 3),
)
def test_any_events_and_counts_end_as_a_rebuild(
    events: list[tuple[int, int]], counts: list[int], n_workers: int
) -> None:
    """Random events, then random repartitions with 1..3 workers: the rows equal the fold of
    the events, with no event applied twice or out of stream order."""

    async def scenario() -> None:
        violations: list[str] = []
        async with chronik.open_store("memory://") as store:
            history = [(f"s{a}", x) for a, x in events]
            half = len(history) // 2
            if half:
                await append(store, history[:half])
            workers = make_workers(store, 3, violations, n_workers)
            admin = ProjectionAdmin(store)
            async with contextlib.AsyncExitStack() as stack:
                for w in workers:
                    await stack.enter_async_context(w)
                await until(lambda: split_is(store, 3, workers))
                late = asyncio.ensure_future(append(store, history[half:]))  # during the first
                current = 3
                for count in counts:
                    if count != current:
                        await admin.repartition("seqs", count)
                        await until(lambda c=count: split_is(store, c, workers))
                        current = count
                last = await late
                await settled(store, workers[0], last)
                assert violations == []
                assert await rows(store) == expected(history)

    asyncio.run(scenario())


async def test_join_waits_across_a_repartition_and_ends_with_stop(store: EventStore) -> None:
    """A worker's join() keeps waiting while a repartition replaces its processors (a runner
    supervising it sees nothing end) and returns once the worker stops."""
    violations: list[str] = []
    await append(store, [("a", 1), ("b", 2)])
    (worker,) = make_workers(store, 2, violations, 1)
    await worker.start()
    joining = asyncio.ensure_future(worker.join())
    await until(lambda: split_is(store, 2, [worker]))
    await ProjectionAdmin(store).repartition("seqs", 3)
    await until(lambda: split_is(store, 3, [worker]))
    await asyncio.sleep(0.1)
    assert not joining.done()
    await worker.stop()
    async with asyncio.timeout(5):
        await joining


def _leader_view(p: Projection, plan: Any, applied: chronik.Position) -> Any:
    """Partition 0 of ``p`` serving ``plan``'s generation, applied up to ``applied``."""
    from chronik.projections.lanes import LaneView, View

    active = LaneView(plan.generation, plan.version, False, applied, applied, True)
    return View(p, 0, f"{p.name}/0", "running", None, plan, False, active, None)


async def test_a_repartition_is_abandoned_when_a_rebuild_starts_or_an_event_parks(
    store: EventStore,
) -> None:
    """The leader's decision over stored state: a pending repartition whose generation starts
    building, or whose partitions parked an event, is deleted with the reason; otherwise, all
    at the common position, it switches with checkpoints fenced one above the lease epochs."""
    from chronik.projections import dead_letters, repartition
    from chronik.projections.bookkeeping import Plan
    from chronik.store.base import TableWrite

    p = projection(2, [])
    at = await append(store, [("a", 1), ("b", 2)])
    plan = Plan(1, 1, 2)
    pending = repartition.Pending("n1", 1, 1, 2, 3)
    await store.acquire_lease("seqs", "w0", 5.0, 0)
    async with store.transaction() as tx:
        tx.write_tables([plan.write("seqs"), repartition._pending_write("seqs", pending)])
        tx.save_checkpoint(pending.at_name("seqs"), at, 0, 1)
        for k in range(2):
            tx.save_checkpoint("projection:seqs:g1", at, k, 1)
    switch = await repartition.hold(store, _leader_view(p, plan, at))
    assert switch.error is None and switch.stop_at == at
    assert [w.table for w in switch.writes] == ["chronik_projection_plans"] * 3
    assert switch.fenced == tuple(
        ("projection:seqs:g1", at, k, e) for k, e in [(0, 2), (1, 1), (2, 1)]
    )
    building = plan._replace(building=2, building_version=1, building_partitions=2)
    gave_up = await repartition.hold(store, _leader_view(p, building, at))
    assert gave_up.error is not None and "rebuild" in gave_up.error
    assert gave_up.writes == [
        TableWrite.delete("chronik_projection_plans", {"name": "seqs.repartition"})
    ]
    (event, *_) = [e async for e in store.read_all(limit=1)]
    async with store.transaction() as tx:
        tx.write_tables([dead_letters.park("seqs/1", 1, event, "boom", 1)])
    parked = await repartition.hold(store, _leader_view(p, plan, at))
    assert parked.error is not None and "seqs/1 parked an event" in parked.error
    assert parked.fenced == ()
