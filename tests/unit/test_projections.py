"""Projections on the embedded stores: fold, order, read model, error policies, control."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.projections import (
    ErrorPolicy,
    PartitionWorker,
    Projection,
    ProjectionAdmin,
    ProjectionProcessor,
    ProjectionRunner,
    ReadModel,
    Table,
    query,
)
from chronik.store.base import EventStore, TableSpec, TableWrite

TOTALS = Table("totals", {"id": str, "n": int, "total": int, "last_seq": int}, primary_key="id")
FAST = ErrorPolicy(retries=1, backoff=0.001)


def totals(
    name: str = "totals",
    policy: ErrorPolicy = FAST,
    version: int = 1,
    seen: list[tuple[str, int]] | None = None,
    table: Table = TOTALS,
    partitions: int = 1,
) -> Projection:
    """Per stream: how many 'added' events, their sum, the last sequence. Poison payloads raise."""
    p = Projection(
        name, tables=[table], policy=policy, version=version, batch_size=7, partitions=partitions
    )

    @p.on("added")
    async def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        d = e.json()
        if d.get("poison"):
            raise ValueError(f"poison at {e.stream}#{e.sequence}")
        if seen is not None:
            seen.append((e.stream.aggregate_id, e.sequence))
        row = await rm.get(table.name, id=e.stream.aggregate_id)
        n, total = (row["n"], row["total"]) if row else (0, 0)
        rm.upsert(
            table.name, id=e.stream.aggregate_id, n=n + 1, total=total + d["x"], last_seq=e.sequence
        )

    return p


def fold(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """What TOTALS must hold after these (aggregate id, payload) events, poison excluded."""
    rows: dict[str, dict[str, Any]] = {}
    seqs: dict[str, int] = {}
    for agg, d in events:
        seq = seqs[agg] = seqs.get(agg, -1) + 1
        if d.get("poison"):
            continue
        r = rows.setdefault(agg, {"id": agg, "n": 0, "total": 0, "last_seq": -1})
        r["n"] += 1
        r["total"] += d["x"]
        r["last_seq"] = seq
    return sorted(rows.values(), key=lambda r: r["id"])


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")  # a real server, a fresh schema
    else:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/p.db"
    async with chronik.open_store(url) as s:
        yield s


async def add(store: EventStore, agg: str, x: int = 1, **extra: Any) -> chronik.AppendResult:
    return await store.append(
        chronik.StreamId("acc", agg), [chronik.EventData("added", {"x": x, **extra})]
    )


async def rows(store: EventStore, name: str = "totals") -> list[dict[str, Any]]:
    return await query(store, name, "totals", order_by=("id",))


async def settle(proc: ProjectionProcessor | ProjectionRunner, store: EventStore) -> None:
    head = await store.head()
    assert head is not None
    async with asyncio.timeout(10):
        await proc.wait_for(head)


async def test_catch_up_then_live_equals_the_fold_in_stream_order(store: EventStore) -> None:
    """Stored then live events are applied once each, in per-stream order, checkpoint committed."""
    history = [(f"a{i % 4}", {"x": i}) for i in range(40)]
    for agg, d in history:
        await add(store, agg, **d)
    seen: list[tuple[str, int]] = []
    async with ProjectionProcessor(store, totals(seen=seen), heartbeat=0.05) as proc:
        await settle(proc, store)
        assert await rows(store) == fold(history)
        for i in range(10):
            history.append((f"a{i % 3}", {"x": 100 + i}))
            r = await add(store, f"a{i % 3}", 100 + i)
        async with asyncio.timeout(10):
            await proc.wait_for(r.position)
        assert await rows(store) == fold(history)
        assert proc.state == "running" and proc.position == r.position
    for agg in {a for a, _ in seen}:
        sequences = [s for a, s in seen if a == agg]
        assert sequences == sorted(sequences) == list(range(len(sequences)))
    checkpoint = await store.load_checkpoint("projection:totals:g1")
    assert checkpoint is not None and checkpoint.position == r.position


async def test_a_restarted_processor_resumes_at_its_checkpoint(store: EventStore) -> None:
    """Stopping and starting again applies nothing twice and picks up the events in between."""
    history = [(f"a{i % 2}", {"x": i}) for i in range(15)]
    for agg, d in history[:10]:
        await add(store, agg, **d)
    async with ProjectionProcessor(store, totals(), heartbeat=0.05) as proc:
        await settle(proc, store)
    for agg, d in history[10:]:
        await add(store, agg, **d)
    async with ProjectionProcessor(store, totals(), heartbeat=0.05) as proc:
        await settle(proc, store)
    assert await rows(store) == fold(history)


async def test_other_event_types_are_not_read_and_the_checkpoint_still_advances(
    store: EventStore,
) -> None:
    """Events of other types never reach handlers; the position follows the head anyway."""
    await add(store, "a")
    for i in range(20):
        await store.append(chronik.StreamId("noise", f"n{i}"), [chronik.EventData("other", {})])
    async with ProjectionProcessor(store, totals(), heartbeat=0.05) as proc:
        await settle(proc, store)
        assert proc.position == await store.head()
    assert [r["n"] for r in await rows(store)] == [1]


async def test_poison_event_is_parked_with_its_stream_while_others_progress(
    store: EventStore,
) -> None:
    """The failed event and later events of its stream wait as dead letters; others go on."""
    history = [("a", {"x": 1}), ("b", {"x": 1}), ("a", {"x": 2, "poison": True})]
    history += [("a", {"x": 3}), ("b", {"x": 4}), ("c", {"x": 5}), ("a", {"x": 6})]
    for agg, d in history:
        await add(store, agg, **d)
    async with ProjectionProcessor(store, totals(), heartbeat=0.05) as proc:
        await settle(proc, store)
        got = {r["id"]: r for r in await rows(store)}
        assert got["a"]["n"] == 1 and got["b"]["n"] == 2 and got["c"]["n"] == 1
        admin = ProjectionAdmin(store)
        letters = await admin.dead_letters("totals")
        assert [(d.stream, d.sequence, d.blocked) for d in letters] == [
            ("acc/a", 1, False),
            ("acc/a", 2, True),
            ("acc/a", 3, True),
        ]
        assert "poison" in (letters[0].error or "") and letters[0].attempts == 2
        status = await admin.status("totals")
        assert status.dead_letters == 3 and "poison" in (status.last_error or "")
        r = await add(store, "a", 7)  # still parked: goes behind the others
        async with asyncio.timeout(10):
            await proc.wait_for(r.position)
        assert len(await admin.dead_letters("totals")) == 4


async def test_an_outage_longer_than_the_retries_parks_nothing(store: EventStore) -> None:
    """A handler failing with StoreUnavailable (the infrastructure is down, the event is fine)
    for longer than its policy retries is retried whole once it is back, and nothing is
    parked."""
    outage = {"calls": 0}
    p = Projection("totals", tables=[TOTALS], policy=FAST)

    @p.on("added")
    async def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        if outage["calls"] < 3:  # FAST gives one retry: this outlasts it
            outage["calls"] += 1
            raise chronik.StoreUnavailable("the other database is restarting")
        row = await rm.get("totals", id=e.stream.aggregate_id)
        n = row["n"] if row else 0
        rm.upsert("totals", id=e.stream.aggregate_id, n=n + 1, total=0, last_seq=e.sequence)

    await add(store, "a")
    r = await add(store, "b")
    async with ProjectionProcessor(store, p, heartbeat=0.02) as proc:
        async with asyncio.timeout(20):
            await proc.wait_for(r.position)
    assert await ProjectionAdmin(store).dead_letters("totals") == []
    assert sorted((r["id"], r["n"]) for r in await rows(store)) == [("a", 1), ("b", 1)]


async def test_dead_letters_retry_applies_them_in_order_and_unparks(store: EventStore) -> None:
    """After the cause is fixed, retry applies the parked events in order and the stream flows."""
    broken = {"on": True}
    p = Projection("totals", tables=[TOTALS], policy=FAST, batch_size=5)

    @p.on("added")
    async def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        if broken["on"] and e.json().get("flaky"):
            raise RuntimeError("downstream is down")
        row = await rm.get("totals", id=e.stream.aggregate_id)
        n = row["n"] if row else 0
        rm.upsert("totals", id=e.stream.aggregate_id, n=n + 1, total=0, last_seq=e.sequence)

    await add(store, "a", flaky=True)
    await add(store, "a")
    await add(store, "b")
    admin = ProjectionAdmin(store)
    async with ProjectionProcessor(store, p, heartbeat=0.02) as proc:
        await settle(proc, store)
        assert len(await admin.dead_letters("totals")) == 2
        await admin.request("totals", "retry")  # still broken: stays parked, attempts counted
        await _until(lambda: _no_requests(store))
        letters = await admin.dead_letters("totals")
        assert len(letters) == 2 and letters[0].attempts == 3
        broken["on"] = False
        await admin.request("totals", "retry", letters[1].event_id)  # stands for its stream
        await _until(lambda: _no_requests(store))
        assert await admin.dead_letters("totals") == []
        r = await add(store, "a")
        async with asyncio.timeout(10):
            await proc.wait_for(r.position)
        got = {r["id"]: (r["n"], r["last_seq"]) for r in await rows(store)}
        assert got == {"a": (3, 2), "b": (1, 0)}


async def test_dropped_dead_letters_are_never_applied(store: EventStore) -> None:
    """Dropping the parked events of a stream unparks it; the dropped events stay unapplied."""
    for agg, d in [("a", {"x": 1, "poison": True}), ("a", {"x": 2}), ("b", {"x": 3})]:
        await add(store, agg, **d)
    admin = ProjectionAdmin(store)
    async with ProjectionProcessor(store, totals(), heartbeat=0.02) as proc:
        await settle(proc, store)
        assert await admin.drop_dead_letters("totals", stream="acc/a") == 2
        await _until(lambda: _no_requests(store))
        r = await add(store, "a", 10)
        async with asyncio.timeout(10):
            await proc.wait_for(r.position)
        assert {r["id"]: r["total"] for r in await rows(store)} == {"a": 10, "b": 3}


async def test_skip_policy_records_the_error_and_moves_on(store: EventStore) -> None:
    """With then='skip' the failing event is left out and later events of its stream apply."""
    history = [("a", {"x": 1}), ("a", {"x": 2, "poison": True}), ("a", {"x": 3})]
    for agg, d in history:
        await add(store, agg, **d)
    policy = ErrorPolicy(retries=0, then="skip")
    async with ProjectionProcessor(store, totals(policy=policy), heartbeat=0.05) as proc:
        await settle(proc, store)
        assert await rows(store) == fold(history)
        assert "poison" in (proc.last_error or "") and proc.state == "running"
    assert await ProjectionAdmin(store).dead_letters("totals") == []


async def test_stop_policy_stops_before_the_event_and_resume_retries_it(
    store: EventStore,
) -> None:
    """With then='stop' the checkpoint stays before the event; waiters get ProjectionStopped."""
    await add(store, "a", 1)
    bad = await add(store, "a", 2, poison=True)
    policy = ErrorPolicy(retries=1, backoff=0.001, then="stop")
    async with ProjectionProcessor(store, totals(policy=policy), heartbeat=0.02) as proc:
        with pytest.raises(chronik.ProjectionStopped):
            async with asyncio.timeout(10):
                await proc.wait_for(bad.position)
        assert proc.state == "stopped" and proc.position is not None
        assert proc.position < bad.position and "poison" in (proc.last_error or "")
        status = await ProjectionAdmin(store).status("totals")
        assert status.state == "stopped" and "poison" in (status.last_error or "")
    assert [r["n"] for r in await rows(store)] == [1]


async def test_a_transient_failure_is_retried_with_backoff(store: EventStore) -> None:
    """A handler that fails twice then succeeds is applied once, without a dead letter."""
    calls = {"n": 0}
    p = Projection("totals", tables=[TOTALS], policy=ErrorPolicy(retries=3, backoff=0.001))

    @p.on("added")
    def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        calls["n"] += 1
        rm.upsert("totals", id="x", n=calls["n"], total=0, last_seq=e.sequence)
        if calls["n"] < 3:
            raise ConnectionError("flaky")

    await add(store, "a")
    async with ProjectionProcessor(store, p, heartbeat=0.05) as proc:
        await settle(proc, store)
    assert [r["n"] for r in await rows(store)] == [3]
    assert await ProjectionAdmin(store).dead_letters() == []


async def test_reset_to_start_and_to_a_position(store: EventStore) -> None:
    """reset replays from the start into cleared tables, or after a given position."""
    history = [(f"a{i % 2}", {"x": i}) for i in range(10)]
    results = [await add(store, agg, **d) for agg, d in history]
    admin = ProjectionAdmin(store)
    async with ProjectionProcessor(store, totals(), heartbeat=0.02) as proc:
        await settle(proc, store)
        await admin.request("totals", "reset")
        await _until(lambda: _no_requests(store))
        await settle(proc, store)
        assert await rows(store) == fold(history)
        await admin.request("totals", "reset", str(results[7].position))
        await _until(lambda: _no_requests(store))
        await settle(proc, store)
        got = {r["id"]: r["n"] for r in await rows(store)}
        assert got == {"a0": 5 + 1, "a1": 5 + 1}  # events 8 and 9 applied a second time


async def test_rebuild_is_blue_green_and_ends_equal_to_a_fresh_fold(store: EventStore) -> None:
    """A rebuild builds generation 2 while generation 1 serves, then takes over."""
    history = [(f"a{i % 5}", {"x": i}) for i in range(60)]
    for agg, d in history[:30]:
        await add(store, agg, **d)
    admin = ProjectionAdmin(store)
    async with ProjectionProcessor(store, totals(), heartbeat=0.02) as proc:
        await settle(proc, store)
        await admin.request("totals", "rebuild")
        for agg, d in history[30:]:
            await add(store, agg, **d)
            assert await rows(store)  # the serving generation answers throughout
        await _until(lambda: _generation(store, 2))
        await settle(proc, store)
        assert await rows(store) == fold(history)
        assert proc.active.generation == 2 and proc.building is None
    with pytest.raises(chronik.ReadModelError):
        await store.read_table("totals__g1")  # the old generation's tables are gone


async def test_a_new_version_builds_new_tables_while_the_old_ones_serve(
    store: EventStore,
) -> None:
    """Deploying version 2 keeps version 1's rows readable until version 2 has caught up."""
    for i in range(20):
        await add(store, f"a{i % 2}", i)
    async with ProjectionProcessor(store, totals(), heartbeat=0.02) as proc:
        await settle(proc, store)
    v1 = await rows(store)
    gate = asyncio.Event()
    v2 = totals(version=2)
    handler, _ = v2.handlers["added"]

    async def gated(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        await gate.wait()
        await handler(e, rm)  # type: ignore[misc]

    v2.handlers["added"] = (gated, True)
    async with ProjectionProcessor(store, v2, heartbeat=0.02) as proc:
        assert proc.active.frozen and proc.building is not None
        status = await ProjectionAdmin(store).status("totals")
        assert status.version == 1 and status.building == 2
        assert await rows(store) == v1  # version 1 serves while version 2 is held up
        gate.set()
        await settle(proc, store)
        status = await ProjectionAdmin(store).status("totals")
        assert (status.version, status.generation, status.building) == (2, 2, None)
        assert await rows(store) == v1


async def test_pause_and_resume_requests_reach_the_processor(store: EventStore) -> None:
    """A paused projection stops applying (status says paused) and catches up on resume."""
    admin = ProjectionAdmin(store)
    async with ProjectionProcessor(store, totals(), heartbeat=0.02) as proc:
        await add(store, "a")
        await settle(proc, store)
        await admin.request("totals", "pause")
        await _until(lambda: _no_requests(store))
        assert (await admin.status("totals")).state == "paused"
        r = await add(store, "a")
        await asyncio.sleep(0.1)
        assert proc.position is not None and proc.position < r.position
        await admin.request("totals", "resume")
        async with asyncio.timeout(10):
            await proc.wait_for(r.position)
    assert [x["n"] for x in await rows(store)] == [2]


async def test_status_reports_position_head_lag_and_heartbeat(store: EventStore) -> None:
    """status has every field; a stopped processor's lag shows the events it has not seen."""
    for i in range(5):
        await add(store, "a", i)
    admin = ProjectionAdmin(store)
    async with ProjectionProcessor(store, totals(), heartbeat=0.02) as proc:
        await settle(proc, store)
        s = (await admin.statuses())[0]
        assert (s.name, s.state, s.alive, s.lag_events) == ("totals", "running", True, 0)
        assert s.position == s.head == str(await store.head()) and s.heartbeat
    for i in range(3):
        await add(store, "b", i)
    s = await admin.status("totals")
    assert s.state == "stopped" and s.lag_events == 3 and s.lag_seconds >= 0
    assert set(s.to_json()) >= {
        "name",
        "state",
        "position",
        "head",
        "lag_events",
        "lag_seconds",
        "last_error",
    }


async def test_unknown_projection_names_list_the_known_ones(store: EventStore) -> None:
    """Asking for a projection nobody ran raises UnknownProjection naming the known ones."""
    admin = ProjectionAdmin(store)
    async with ProjectionProcessor(store, totals(), heartbeat=0.05):
        pass
    with pytest.raises(chronik.UnknownProjection, match="known projections: totals"):
        await admin.request("nope", "pause")
    with pytest.raises(chronik.UnknownProjection):
        await admin.status("nope")


async def test_external_effects_get_each_event_with_its_id(store: EventStore) -> None:
    """A projection without tables sees every event at least once, keyed by event id."""
    sent: dict[str, int] = {}
    mailer = Projection("mailer")

    @mailer.on("added")
    def send(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        sent[rm.event_id] = sent.get(rm.event_id, 0) + 1

    results = [await add(store, f"a{i}") for i in range(5)]
    async with ProjectionRunner(store, [mailer, totals()], heartbeat=0.05) as runner:
        await settle(runner, store)
    ids = [e.event_id async for e in store.read_all()]
    assert sorted(sent) == sorted(ids) and set(sent.values()) == {1}
    assert len(results) == 5


async def test_read_model_reads_see_the_batch_writes(store: EventStore) -> None:
    """get and query inside a batch see upserts, partial updates and deletes not yet committed."""
    async with store.transaction() as tx:
        tx.write_tables([TableWrite("ensure", s.name, spec=s) for s in [TOTALS.spec(1)]])
        tx.write_tables(
            [
                TableWrite.upsert(
                    "totals__g1", {"id": "c", "n": 1, "total": 1, "last_seq": 0}, ("id",)
                )
            ]
        )
    rm = ReadModel(store, {"totals": TOTALS}, 1)
    rm.upsert("totals", id="a", n=1, total=5, last_seq=0)
    rm.upsert("totals", id="c", n=9)  # partial update of a committed row
    assert await rm.get("totals", id="a") == {"id": "a", "n": 1, "total": 5, "last_seq": 0}
    assert await rm.get("totals", id="c") == {"id": "c", "n": 9, "total": 1, "last_seq": 0}
    rm.delete("totals", id="a")
    assert await rm.get("totals", id="a") is None
    assert [r["id"] for r in await rm.query("totals", total=1)] == ["c"]
    before = len(rm.writes)
    rm.begin(await _any_event(store))
    rm.upsert("totals", id="z", n=1, total=1, last_seq=0)
    rm.discard()
    assert len(rm.writes) == before and await rm.get("totals", id="z") is None
    with pytest.raises(chronik.ValidationError, match="no column"):
        rm.upsert("totals", id="a", nope=1)
    with pytest.raises(chronik.ValidationError, match="primary key"):
        rm.upsert("totals", n=1)
    with pytest.raises(chronik.ValidationError, match="unknown table"):
        rm.upsert("other", id="a")


async def test_bad_declarations_and_writes_are_typed_errors(store: EventStore) -> None:
    """Bad table, column and projection names, and unsafe identifiers, raise ValidationError."""
    for make in (
        lambda: Table("Bad Name", {"id": str}, primary_key="id"),
        lambda: Table("chronik_x", {"id": str}, primary_key="id"),
        lambda: Table("t", {"id; drop": str}, primary_key="id"),
        lambda: Table("t", {"id": list}, primary_key="id"),
        lambda: Table("t", {"id": str}, primary_key="nope"),
        lambda: Projection("Bad-Name"),
        lambda: ErrorPolicy(then="explode"),  # type: ignore[arg-type]
    ):
        with pytest.raises(chronik.ValidationError):
            make()
    with pytest.raises(chronik.ValidationError):
        await store.read_table("x; DROP TABLE chronik_events")
    with pytest.raises(chronik.ValidationError):
        await store.read_table("totals", {"a b": 1})
    bad = TableSpec("t", (("id", "TEXT; DROP"),), ("id",))
    with pytest.raises(chronik.ValidationError):
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("ensure", "t", spec=bad)])
    with pytest.raises(chronik.ReadModelError):
        await store.read_table("no_such_table")


async def test_a_write_the_database_refuses_is_isolated_and_parked(tmp_path: Path) -> None:
    """SQLite refusing one event's row (unbindable value) parks that event; the rest commit."""
    p = Projection("totals", tables=[TOTALS], policy=FAST, batch_size=10)

    @p.on("added")
    def added(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        bad = e.json().get("poison")
        rm.upsert(
            "totals", id=e.stream.aggregate_id, n=[1] if bad else 1, total=0, last_seq=e.sequence
        )

    async with chronik.open_store(f"sqlite:///{tmp_path}/r.db") as store:
        for agg, poison in [("a", False), ("b", True), ("c", False), ("b", False)]:
            await add(store, agg, poison=poison)
        async with ProjectionProcessor(store, p, heartbeat=0.05) as proc:
            await settle(proc, store)
        assert [r["id"] for r in await rows(store)] == ["a", "c"]
        letters = await ProjectionAdmin(store).dead_letters("totals")
        assert [(d.stream, d.blocked) for d in letters] == [("acc/b", False), ("acc/b", True)]
        assert "ReadModelError" in (letters[0].error or "")


async def _any_event(store: EventStore) -> chronik.RecordedEvent:
    await add(store, "any")
    async for e in store.read_all(limit=1):
        return e
    raise AssertionError("no event")


async def _no_requests(store: EventStore) -> bool:
    return not await store.read_table("chronik_projection_requests")


async def _generation(store: EventStore, generation: int) -> bool:
    found = await store.read_table("chronik_projections", {"name": "totals"})
    return bool(found) and found[0]["generation"] == generation and found[0]["building"] is None


async def _until(check: Any) -> None:
    async with asyncio.timeout(10):
        while not await check():
            await asyncio.sleep(0.01)


async def test_a_filtered_subscription_does_not_rescan_what_it_skipped(
    store: EventStore,
) -> None:
    """After a page with nothing of its own, a filtered subscription reads on from the head."""
    await add(store, "a")
    for i in range(30):
        await store.append(chronik.StreamId("noise", f"n{i}"), [chronik.EventData("other", {})])
    reads: list[chronik.Position | None] = []
    original = store._read_all_page

    async def spy(after: Any, *args: Any) -> Any:
        reads.append(after)
        return await original(after, *args)

    store._read_all_page = spy  # type: ignore[method-assign]
    async with store.subscribe(types=["added"]) as sub:
        first = await anext(sub)
        head = await store.head()
        r = await add(store, "a")
        second = await anext(sub)
    assert (first.stream.aggregate_id, second.position) == ("a", r.position)
    assert head is not None and reads[-1] is not None and reads[-1] >= head


async def test_a_second_processor_stands_by_and_takes_over_on_release(store: EventStore) -> None:
    """Two processors of one projection: one runs, one stands by, and takes over on stop."""
    history = [(f"a{i % 3}", {"x": i}) for i in range(30)]
    for agg, d in history[:10]:
        await add(store, agg, **d)
    first = ProjectionProcessor(store, totals(), heartbeat=0.02, owner="one", lease_ttl=5)
    second = ProjectionProcessor(store, totals(), heartbeat=0.02, owner="two", lease_ttl=5)
    async with first, second:
        await settle(first, store)
        assert (first.state, first.epoch, second.state, second.epoch) == (
            "running",
            1,
            "standby",
            None,
        )
        await first.stop()
        for agg, d in history[10:]:
            await add(store, agg, **d)
        await _until(lambda: _true(second.epoch is not None))
        await settle(second, store)
        assert second.epoch == 2 and (await ProjectionAdmin(store).status("totals")).owner == "two"
    assert await rows(store) == fold(history)


async def test_an_owner_that_lost_its_lease_cannot_commit_its_batch(store: EventStore) -> None:
    """A processor stuck past its lease is fenced: its batch fails whole, the new owner's
    rows equal the fold, nothing applied twice."""
    gate = asyncio.Event()
    stuck = totals()
    handler, _ = stuck.handlers["added"]

    async def slow(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        await gate.wait()
        await handler(e, rm)  # type: ignore[misc]

    stuck.handlers["added"] = (slow, True)
    history = [(f"a{i % 3}", {"x": i}) for i in range(12)]
    for agg, d in history:
        await add(store, agg, **d)
    first = ProjectionProcessor(store, stuck, heartbeat=0.02, owner="one", lease_ttl=0.2)
    second = ProjectionProcessor(store, totals(), heartbeat=0.02, owner="two", lease_ttl=0.2)
    async with first, second:
        await _until(lambda: _true(second.epoch is not None))  # first's lease ran out
        await settle(second, store)
        gate.set()  # first wakes up and tries to commit its batch
        await _until(lambda: _true(first.state == "standby"))
        assert (first.last_error or "").startswith(("LeaseHeld", "CheckpointFenced"))
        assert await rows(store) == fold(history)


async def _true(value: bool) -> bool:
    return value


async def _partitions_caught_up(store: EventStore, name: str, partitions: int) -> bool:
    head = await store.head()
    for k in range(partitions):
        cp = await store.load_checkpoint(f"projection:{name}:g1", k)
        if cp is None or head is None or cp.position < head:
            return False
    return True


async def test_partition_workers_share_partitions_and_take_over(store: EventStore) -> None:
    """Two workers split 4 partitions 2 and 2; when one leaves the other takes all four; the
    rows equal the fold and no event is applied twice."""

    def split() -> Projection:
        return totals(policy=ErrorPolicy(retries=0), partitions=4)

    history = [(f"a{i % 13}", {"x": i}) for i in range(80)]
    for agg, d in history[:40]:
        await add(store, agg, **d)
    one = PartitionWorker(store, split(), owner="one", heartbeat=0.02, lease_ttl=0.5)
    two = PartitionWorker(store, split(), owner="two", heartbeat=0.02, lease_ttl=0.5)
    async with one, two:
        await _until(lambda: _true(sorted(one.owned + two.owned) == [0, 1, 2, 3]))
        await _until(lambda: _true(len(one.owned) == len(two.owned) == 2))
        await _until(lambda: _partitions_caught_up(store, "totals", 4))
        assert await rows(store) == fold(history[:40])
        names = [s.name for s in await ProjectionAdmin(store).statuses()]
        assert names == ["totals/0", "totals/1", "totals/2", "totals/3"]
        await one.stop()
        for agg, d in history[40:]:
            await add(store, agg, **d)
        await _until(lambda: _true(two.owned == [0, 1, 2, 3]))
        await _until(lambda: _partitions_caught_up(store, "totals", 4))
        assert await rows(store) == fold(history)
        assert await ProjectionAdmin(store).dead_letters("totals") == []
        await ProjectionAdmin(store).request("totals", "pause")  # reaches every partition
        await _until(lambda: _no_requests(store))
        assert {s.state for s in await ProjectionAdmin(store).statuses()} == {"paused"}


async def test_a_runner_runs_partitioned_projections_and_waits_for_all_partitions(
    store: EventStore,
) -> None:
    """A runner gives a partitioned projection a worker; wait_for covers every partition."""
    history = [(f"a{i % 9}", {"x": i}) for i in range(40)]
    split = totals(partitions=3)
    async with ProjectionRunner(store, [split], heartbeat=0.02, lease_ttl=0.5) as runner:
        assert list(runner.workers) == ["totals"] and not runner.processors
        for agg, d in history:
            r = await add(store, agg, **d)
        async with asyncio.timeout(10):
            await runner.wait_for(r.position)
        assert await rows(store) == fold(history)
        assert "PartitionWorker" in repr(runner)


async def test_table_writes_commit_with_the_unit_all_or_nothing(store: EventStore) -> None:
    """Rows, appends and checkpoints of one unit commit together, or none of them does."""
    spec = TOTALS.spec(1)
    row = {"id": "a", "n": 1, "total": 1, "last_seq": 0}
    async with store.transaction() as tx:
        tx.write_tables([TableWrite("ensure", spec.name, spec=spec)])
    with pytest.raises(chronik.WrongExpectedVersion):
        async with store.transaction() as tx:
            tx.write_tables([TableWrite.upsert(spec.name, row, ("id",))])
            tx.save_checkpoint("p", chronik.Position(1))
            tx.append(chronik.StreamId("acc", "x"), [chronik.EventData("added", {})], 5)
    assert await store.read_table(spec.name) == [] and await store.load_checkpoint("p") is None
    with pytest.raises(chronik.ReadModelError):
        async with store.transaction() as tx:
            tx.append(chronik.StreamId("acc", "x"), [chronik.EventData("added", {})])
            tx.save_checkpoint("p", chronik.Position(1))
            tx.write_tables([TableWrite.upsert("missing_table", row, ("id",))])
    assert await store.head() is None and await store.load_checkpoint("p") is None
    async with store.transaction() as tx:
        tx.append(chronik.StreamId("acc", "x"), [chronik.EventData("added", {})])
        tx.write_tables([TableWrite.upsert(spec.name, row, ("id",))])
        tx.write_tables([TableWrite.upsert(spec.name, {"id": "a", "n": 2}, ("id",))])
        tx.save_checkpoint("p", chronik.Position(1))
    assert await store.read_table(spec.name) == [{**row, "n": 2}]
    cp = await store.load_checkpoint("p")
    assert cp is not None and cp.position == chronik.Position(1)  # what the unit saved


async def test_leases_by_the_database_clock(store: EventStore) -> None:
    """A lease is exclusive until released or expired; a new owner gets a higher epoch; a lease
    is not a table write."""
    from chronik.projections import leases  # the old import path keeps working

    assert await leases.acquire(store, "job", "one", 5.0) == 1
    assert await leases.acquire(store, "job", "one", 5.0) == 1  # renewal keeps the epoch
    assert await leases.acquire(store, "job", "two", 5.0) is None
    with pytest.raises(chronik.LeaseHeld):
        async with store.transaction() as tx:
            tx.append(chronik.StreamId("acc", "x"), [chronik.EventData("added", {})])
            tx.acquire_lease("job", "two", 5.0)
    assert await store.head() is None  # the unit wrote nothing
    async with store.transaction() as tx:
        tx.release_lease("job", "one")
    assert await leases.acquire(store, "job", "two", 5.0) == 2
    assert await leases.acquire(store, "job", "one", 0.001) is None
    assert await leases.acquire(store, "job", "three", 0.0) is None  # two holds it for 5 s
    assert await leases.acquire(store, "other", "three", 0.0) == 1
    with pytest.raises(chronik.ValidationError):
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("lease", "totals", ("name",), ("x",))])
