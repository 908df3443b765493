"""The repository folds a stream from payload rows, and from whole events from the first one
that needs them (an upcast, another content type, a payload that does not decode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

import chronik
from chronik.deadline_events import DeadlineScheduled
from chronik.repository import Repository

registry = chronik.EventRegistry()


@registry.event("tally.added", version=2)
class Added(msgspec.Struct):
    n: int
    note: str = ""


@registry.upcaster("tally.added", 1)
def _v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {"n": payload["n"] * 10, "note": "upcast"}  # v1 payloads also fit v2: only the
    # version tells them apart


def evolve(state: list[Any], event: Any) -> list[Any]:
    if isinstance(event, Added):
        return [*state, (event.n, event.note)]
    return [*state, ("raw", event.type)]  # a RecordedEvent of a type not registered


STREAM = chronik.StreamId("tally", "t1")


def model() -> chronik.Decider:
    """A typed decider whose state lists what it folded."""
    return chronik.Decider("tally", lambda c, s: [], evolve, list)


def current(n: int) -> chronik.EventData:
    return registry.to_event_data(Added(n))


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A fresh memory or SQLite store."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/f.db"
    async with chronik.open_store(url) as s:
        yield s


async def test_pages_of_current_events_fold_from_rows(store: chronik.EventStore) -> None:
    """2,500 current events (three pages): state, version and count as folded one by one."""
    for start in range(0, 2500, 500):
        await store.append(STREAM, [current(i) for i in range(start, start + 500)])
    loaded = await Repository(store, registry).load(model(), STREAM, use_cache=False)
    assert loaded.state == [(i, "") for i in range(2500)]
    assert (loaded.version, loaded.replayed) == (2499, 2500)


async def test_an_old_version_mid_stream_is_upcast_and_the_rest_folded(
    store: chronik.EventStore,
) -> None:
    """A v1 event after current ones goes through the upcaster; the events around it fold in
    order, as do an unregistered type, another content type and a deadline event."""
    repository = Repository(store, registry)  # registers chronik's deadline event types
    scheduled = registry.to_event_data(DeadlineScheduled("d1", 5.0, "Tick"))
    await store.append(
        STREAM,
        [
            current(1),
            chronik.EventData("tally.added", {"n": 7}, schema_version=1),
            current(2),
            chronik.EventData("tally.other", {"x": 1}),
            scheduled,
            current(3),
        ],
    )
    loaded = await repository.load(model(), STREAM, use_cache=False)
    assert loaded.state == [(1, ""), (70, "upcast"), (2, ""), ("raw", "tally.other"), (3, "")]
    assert (loaded.version, loaded.replayed) == (5, 6)


async def test_deadline_events_among_current_ones_are_skipped_on_the_row_path(
    store: chronik.EventStore,
) -> None:
    """A deadline event between current events is counted but never folded, and the rows
    after it still fold from payloads (the registry knows its type: chronik registers it)."""
    repository = Repository(store, registry)  # registers chronik's deadline event types
    one, two = (registry.to_event_data(DeadlineScheduled(d, 5.0, "Tick")) for d in ("d1", "d2"))
    await store.append(STREAM, [current(1), one, current(2), two, current(3)])
    loaded = await repository.load(model(), STREAM, use_cache=False)
    assert loaded.state == [(1, ""), (2, ""), (3, "")]
    assert (loaded.version, loaded.replayed) == (4, 5)


async def test_a_payload_that_does_not_decode_names_the_event(store: chronik.EventStore) -> None:
    """A current-version payload that fails to decode raises UndecodableEvent naming it, as the
    whole-event path does; nothing is folded past it."""
    await store.append(STREAM, [current(1), chronik.EventData("tally.added", {"n": "x"})])
    with pytest.raises(chronik.UndecodableEvent, match=r"tally\.added"):
        await Repository(store, registry).load(model(), STREAM, use_cache=False)


async def test_a_snapshot_then_the_tail(store: chronik.EventStore) -> None:
    """With a snapshot, only the events after it are read and folded."""
    await store.append(STREAM, [current(i) for i in range(10)])
    snapshots = chronik.Snapshots(every=5)
    decider = chronik.Decider(
        "tally", lambda c, s: [], evolve, list, snapshots=snapshots, state_type=list
    )
    state = [("snap", "")]
    await store.save_snapshot(chronik.Snapshot(STREAM, 6, "tally", 1, msgspec.json.encode(state)))
    loaded = await Repository(store, registry).load(decider, STREAM, use_cache=False)
    assert loaded.state == [["snap", ""], (7, ""), (8, ""), (9, "")]
    assert (loaded.version, loaded.replayed, loaded.snapshot_sequence) == (9, 3, 6)
