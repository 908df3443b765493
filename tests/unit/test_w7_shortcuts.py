"""The W7 shortcuts of this round keep their fallbacks: a unit that holds more than one append
is written whole, a model's own snapshots are still asked for, decide's lists and tuples are
all appended, and the recorded events carry every field of what was stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

import chronik
from chronik import Command, StreamId
from chronik.messages import Snapshot

registry = chronik.EventRegistry()


@registry.event("w7s.added")
class Added(msgspec.Struct):
    n: int


def evolve(state: int, event: Added) -> int:
    return state + event.n


def add(n: int) -> Command:
    return Command(domain="w7s", aggregate_id="a1", type="Add", payload={"n": n})


async def test_a_unit_of_one_append_and_a_snapshot_writes_both(tmp_path: Path) -> None:
    """A batch of one unit that holds an append and a snapshot is not the appends-only unit:
    both are written."""
    stream = StreamId("w7s", "a1")
    async with chronik.open_store(f"sqlite:///{tmp_path}/u.db") as store:
        async with store.transaction() as tx:
            tx.append(stream, [registry.to_event_data(Added(1))], chronik.NO_STREAM)
            tx.save_snapshot(Snapshot(stream, 0, "w7s", 1, b"1"))
        assert await store.stream_version(stream) == 0
        snapshot = await store.load_snapshot(stream)
        assert snapshot is not None and snapshot.state == b"1"


class OwnSnapshots(chronik.Decider):
    """A decider that stores its own snapshot after every command."""

    def snapshot_after(self, state: Any, stream: StreamId, version: int) -> Snapshot | None:
        return Snapshot(stream, version, "own", 1, msgspec.json.encode(state))


async def test_a_model_that_makes_its_own_snapshots_is_asked(tmp_path: Path) -> None:
    """``snapshot_after`` overridden: the bus stores what it returns."""
    app = chronik.Chronik(store=f"sqlite:///{tmp_path}/s.db", registry=registry)
    app.bus.register(OwnSnapshots("w7s", lambda c, s: Added(c.payload["n"]), evolve, int))
    async with app:
        await app.dispatch(add(5))
        await app.bus.repository.drain()
        snapshot = await app.store.load_snapshot(StreamId("w7s", "a1"))
        assert snapshot is not None and (snapshot.type, snapshot.state) == ("own", b"5")


async def test_decide_may_return_a_list_or_a_tuple(tmp_path: Path) -> None:
    """Every event of a list or tuple is appended, in order; a single event is one."""
    results = []
    app = chronik.Chronik(store=f"sqlite:///{tmp_path}/t.db", registry=registry)
    shapes = {1: lambda n: Added(n), 2: lambda n: [Added(n), Added(n + 1)]}
    shapes[3] = lambda n: (Added(n), Added(n + 1), Added(n + 2))
    app.add_decider("w7s", lambda c, s: shapes[c.payload["n"] % 10](c.payload["n"]), evolve, int)
    async with app:
        for n in (11, 2, 3):
            results.append(await app.dispatch(add(n)))
        assert [len(r.events) for r in results] == [1, 2, 3]
        assert await app.load("w7s", "a1") == 11 + 2 + 3 + 3 + 4 + 5


async def test_the_recorded_events_are_the_stored_ones(tmp_path: Path) -> None:
    """Each field of a dispatch's RecordedEvent equals the event read back from the store."""
    app = chronik.Chronik(store=f"sqlite:///{tmp_path}/r.db", registry=registry)
    app.add_decider("w7s", lambda c, s: Added(c.payload["n"]), evolve, int)
    async with app:
        result = await app.dispatch(add(7))
        stored = [e async for e in app.store.read_stream(StreamId("w7s", "a1"))]
        assert result.events == stored
