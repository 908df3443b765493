"""The repository's run path on SQLite (``read_stream_run``: rows without sequences, their keys
naming the decoder) and each of its fallbacks: a page with a gap, an archive, keys of other
versions, content types and chronik's deadline events, truncated and deleted streams."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

import chronik
from chronik.deadline_events import DeadlineScheduled
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.personal import KeyRing
from chronik.repository import Repository
from chronik.store.runs import RunKeys, key_type, skip
from chronik.store.sqlite import runs as sqlite_runs
from tests.unit.test_personal import _decide, _evolve, _registry, _shown

registry = chronik.EventRegistry()


@registry.event("w3s.added")
class Added(msgspec.Struct):
    n: int


@registry.event("w3s.renamed", version=2)
class Renamed(msgspec.Struct):
    name: str


@registry.upcaster("w3s.renamed", 1)
def _v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {"name": f"old:{payload['name']}"}


def evolve(state: list[Any], event: Any) -> list[Any]:
    if isinstance(event, Added):
        return [*state, event.n]
    if isinstance(event, Renamed):
        return [*state, event.name]
    return [*state, ("raw", event.type)]


STREAM = chronik.StreamId("w3s", "a1")


def model() -> chronik.Decider:
    """A typed decider whose state lists what it folded."""
    return chronik.Decider("w3s", lambda c, s: [], evolve, list)


def added(n: int) -> chronik.EventData:
    return registry.to_event_data(Added(n))


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    """A fresh SQLite store."""
    async with chronik.open_store(f"sqlite:///{tmp_path}/w3s.db") as s:
        yield s


async def load(store: chronik.EventStore) -> chronik.repository.Loaded:
    return await Repository(store, registry).load(model(), STREAM, use_cache=False)


async def test_a_run_is_read_and_folded_in_order(store: chronik.EventStore) -> None:
    """The store answers a run (first sequence, end, two-column rows); the load folds it."""
    await store.append(STREAM, [added(i) for i in range(5)])
    run = await store.read_stream_run(STREAM, 2, 1000, 1)  # type: ignore[attr-defined]
    assert run == (2, True, [("w3s.added", b'{"n":2}'), ("w3s.added", b'{"n":3}'), run[2][2]])
    loaded = await load(store)
    assert (loaded.state, loaded.version, loaded.replayed) == ([0, 1, 2, 3, 4], 4, 5)


async def test_a_page_with_a_gap_is_not_a_run(store: chronik.EventStore, tmp_path: Path) -> None:
    """A stream missing a sequence (its count does not fill the window): the sequences come
    from the rows (the general page), so the version is the last one stored."""
    await store.append(STREAM, [added(i) for i in range(6)])
    with sqlite3.connect(f"{tmp_path}/w3s.db") as conn:
        conn.execute("DELETE FROM chronik_events WHERE sequence = 2")
    assert await store.read_stream_run(STREAM, 0, 1000, 1) is None  # type: ignore[attr-defined]
    loaded = await load(store)
    assert (loaded.state, loaded.version, loaded.replayed) == ([0, 1, 3, 4, 5], 5, 5)


async def test_an_attached_archive_reads_no_runs(store: chronik.EventStore) -> None:
    """With an archive attached the run answers None (reads go through the archive)."""
    await store.append(STREAM, [added(1)])
    store.archive = object()  # type: ignore[assignment]
    try:
        assert await store.read_stream_run(STREAM, 0, 10, 1) is None  # type: ignore[attr-defined]
    finally:
        store.archive = None


async def test_keys_name_version_and_content_type(store: chronik.EventStore) -> None:
    """Rows at the run's version are keyed by type; others " type version" or " type"."""
    await store.append(STREAM, [added(1), registry.to_event_data(Renamed("x"))])
    await store.append(STREAM, [chronik.EventData("w3s.blob", b"\x00", content_type="x/y")])
    run = await store.read_stream_run(STREAM, 0, 10, 1)  # type: ignore[attr-defined]
    assert [r[0] for r in run[2]] == ["w3s.added", " w3s.renamed 2", " w3s.blob"]
    loaded = await load(store)  # the blob: whole events from it on (not registered: as it is)
    assert loaded.state == [1, "x", ("raw", "w3s.blob")] and loaded.version == 2


async def test_other_versions_upcasts_content_types_and_deadlines_fold_as_events(
    store: chronik.EventStore,
) -> None:
    """A current event at another version folds from its row; an old one is upcast (the
    fold reads whole events from it on); a deadline event is passed over."""
    Repository(store, registry)  # registers chronik's deadline events
    deadline = registry.to_event_data(DeadlineScheduled("d1", 5, "Ping"))
    old = chronik.EventData("w3s.renamed", {"name": "a"}, schema_version=1)
    await store.append(STREAM, [added(1), registry.to_event_data(Renamed("x")), deadline])
    await store.append(STREAM, [added(2), old, added(3)])
    loaded = await load(store)
    assert loaded.state == [1, "x", 2, "old:a", 3]
    assert (loaded.version, loaded.replayed) == (5, 6)


async def test_a_run_starts_at_the_truncation_point(store: chronik.EventStore) -> None:
    """A soft-deleted stream that started again: the run's window begins at its truncation
    point and the version continues the old sequence numbers."""
    await store.append(STREAM, [added(i) for i in range(3)])
    await store.delete_stream(STREAM)
    await store.append(STREAM, [added(7), added(8)])
    run = await store.read_stream_run(STREAM, 0, 1000, 1)  # type: ignore[attr-defined]
    assert run is not None and run[:2] == (4, True) and len(run[2]) == 2
    loaded = await load(store)
    assert (loaded.state, loaded.version, loaded.replayed) == ([7, 8], 5, 2)


async def test_a_run_of_a_stream_that_is_not_there(store: chronik.EventStore) -> None:
    """No stream: an empty run that ends, and an empty state."""
    run = await store.read_stream_run(STREAM, 0, 10, 1)  # type: ignore[attr-defined]
    assert run == (0, True, [])
    loaded = await load(store)
    assert (loaded.state, loaded.version, loaded.replayed) == ([], None, 0)


async def test_personal_streams_load_keys_on_runs_and_are_never_snapshotted(
    tmp_path: Path,
) -> None:
    """On SQLite's run path too: a reload with an empty key cache opens the sealed values
    (keys loaded on the fly) and a stream with personal fields is never snapshotted."""
    app = chronik.Chronik(store=f"sqlite:///{tmp_path}/p.db", registry=_registry())
    ring = KeyRing(StoreKeyStore(app.store))
    app.registry.use_keys(ring)
    app.add_decider(
        "customer", decide=_decide, evolve=_evolve, initial=dict, snapshots=chronik.Snapshots(1)
    )
    async with app:
        for email in ("e0@example.test", "e1@example.test"):
            command = chronik.Command(
                domain="customer", aggregate_id="c-7", type="Register", payload={"email": email}
            )
            await app.dispatch(command)
        ring.clear()
        assert await _shown(app, "c-7") == "email=e1@example.test"
        ring.clear()
        stream = chronik.StreamId("customer", "c-7")
        loaded = await app.bus.repository.load(app.bus.model("customer"), stream, False)
        assert loaded.personal and loaded.state == {"email": "e1@example.test"}
        await app.bus.repository.drain()
        assert await app.store.load_snapshot(chronik.StreamId("customer", "c-7")) is None


def test_rows_without_the_streams_row_first_are_not_a_run() -> None:
    """The stream's row must come first (an int where events have their type)."""
    assert sqlite_runs.run_of([("w3s.added", b"{}"), (0, 0)], 10) is None
    assert sqlite_runs.run_of([], 10) is None
    assert sqlite_runs.run_of([(3, 4), ("a", b"1"), ("a", b"2")], 10) == (
        3,
        True,
        [("a", b"1"), ("a", b"2")],
    )
    assert sqlite_runs.run_of([(0, 9), ("a", b"1"), ("a", b"2")], 2) == (
        0,
        False,
        [("a", b"1"), ("a", b"2")],
    )


def test_run_keys() -> None:
    """Plain keys at the common version; odd keys at a type's current version decode and are
    remembered; old versions, other content types and unknown types do not; passed types skip."""
    one, two = (lambda b: 1), (lambda b: 2)
    keys = RunKeys({"a": (1, one), "b": (1, one), "c": (2, two)}, frozenset({"d"}))
    assert keys.version == 1
    assert keys.known == {"a": one, "b": one}
    assert keys.odd(" c 2") is two and keys.known[" c 2"] is two
    assert keys.odd(" c 1") is None and keys.odd(" c") is None and keys.odd(" a 2") is None
    assert keys.odd("x") is None and keys.odd(" x 1") is None
    assert keys.odd("d") is skip and keys.odd(" d 3") is skip and keys.odd(" d") is skip
    assert [key_type(k) for k in ("a", " c 2", " c")] == ["a", "c", "c"]
    assert RunKeys({"a": (3, one), "b": (2, one)}).version == 2  # a tie: the lowest
