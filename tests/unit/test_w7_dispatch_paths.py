"""The shorter dispatch paths of W7: the per-stream lock made only on contention, event ids
from a pre-hashed namespace, and SQLite's two-statement append; each keeps its guarantees."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chronik
from chronik import Command, StreamId
from chronik.commands import event_id_for
from chronik.messages import EventData
from chronik.store.sqlite.store import SQLiteEventStore

registry = chronik.EventRegistry()


@registry.event("w7.added")
class Added(msgspec.Struct):
    n: int


class Add(msgspec.Struct):
    n: int


def decide(command: Command, state: int) -> Added:
    return Added(command.payload.n)


def evolve(state: int, event: Added) -> int:
    return state + event.n


def make_app(url: str = "memory://") -> chronik.Chronik:
    app = chronik.Chronik(store=url, registry=registry)
    app.add_decider("w7", decide, evolve, int, commands={"Add": Add})
    return app


def add(n: int, aggregate_id: str = "a1") -> Command:
    return Command(domain="w7", aggregate_id=aggregate_id, type="Add", payload={"n": n})


class Gate:
    """Handler middleware that records each decision and holds the first until opened."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.entered: list[int] = []

    async def __call__(self, command: Command, state: Any, call_next: Any) -> list[Any]:
        self.entered.append(command.payload.n)
        if len(self.entered) == 1:
            await self.opened.wait()
        return list(await call_next(command, state))


async def spin(times: int = 20) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


# --- the per-stream lock ----------------------------------------------------------------------


async def test_two_commands_racing_on_one_stream_run_one_after_the_other() -> None:
    """The second command waits for the first (a lock made on contention), never re-decides."""
    async with make_app() as app:
        gate = Gate()
        app.bus.use_handler(gate)
        first = asyncio.create_task(app.dispatch(add(1)))
        await spin()
        assert app.bus.locks._entries  # held without a lock object
        second = asyncio.create_task(app.dispatch(add(2)))
        await spin()
        assert gate.entered == [1] and len(app.bus.locks) == 1  # the second one waits
        gate.opened.set()
        one, two = await asyncio.gather(first, second)
        assert (one.version, two.version) == (0, 1) and gate.entered == [1, 2]
        assert len(app.bus.locks) == 0 and await app.load("w7", "a1") == 3


async def test_a_cancelled_waiter_releases_nothing_it_does_not_hold() -> None:
    """Cancelling a waiter leaves the holder's lock held; later commands still queue."""
    async with make_app() as app:
        gate = Gate()
        app.bus.use_handler(gate)
        first = asyncio.create_task(app.dispatch(add(1)))
        await spin()
        waiter = asyncio.create_task(app.dispatch(add(2)))
        await spin()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        third = asyncio.create_task(app.dispatch(add(4)))
        await spin()
        assert gate.entered == [1] and not third.done()  # still held by the first
        gate.opened.set()
        assert (await first).version == 0 and (await third).version == 1
        assert gate.entered == [1, 4] and len(app.bus.locks) == 0
        assert await app.load("w7", "a1") == 5


async def test_the_lock_is_given_back_after_a_failure_and_entries_do_not_pile_up() -> None:
    """A failing command releases its stream; many streams leave no entry behind."""
    async with make_app() as app:
        with pytest.raises(chronik.InvalidCommand):
            await app.dispatch(Command(domain="w7", aggregate_id="a1", type="Add", payload={}))
        await asyncio.gather(*(app.dispatch(add(1, f"s{i % 50}")) for i in range(500)))
        assert len(app.bus.locks) == 0 and app.bus.locks._entries == {}
        assert await app.load("w7", "s7") == 10


# --- event ids ------------------------------------------------------------------------------

_NAMESPACE = uuid.UUID("6f1d3c52-7a0e-4c3b-9d61-2f8e5b7a9c14")


def previous_event_id_for(command_id: str, index: int) -> str:
    """The function as it was before the namespace was pre-hashed (reference)."""
    d = bytearray(hashlib.sha1(_NAMESPACE.bytes + f"{command_id}\x00{index}".encode()).digest())
    d = d[:16]
    d[6] = (d[6] & 0x0F) | 0x50
    d[8] = (d[8] & 0x3F) | 0x80
    h = d.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@pytest.mark.parametrize(
    "command_id", ["cmd-1", "", "ä∂ü-😀", "a\x00b", "x" * 128, "Ωmega", "\U0010ffff", "0" * 55]
)
@pytest.mark.parametrize("index", [0, 1, 9, 10, 255, 4096])
def test_event_ids_are_byte_identical_to_the_previous_function(command_id: str, index: int) -> None:
    """Same ids as before (and as uuid.uuid5) for these ids and indexes."""
    expected = previous_event_id_for(command_id, index)
    assert event_id_for(command_id, index) == expected
    assert expected == str(uuid.uuid5(_NAMESPACE, f"{command_id}\x00{index}"))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200), st.integers(min_value=0, max_value=10_000))
def test_event_ids_match_the_previous_function_on_any_text(command_id: str, index: int) -> None:
    """Any text without lone surrogates: the same id as the previous function."""
    try:
        command_id.encode()
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            event_id_for(command_id, index)
        return
    assert event_id_for(command_id, index) == previous_event_id_for(command_id, index)


# --- SQLite: the common append in two statements ----------------------------------------------


def data(event_id: str, n: int = 1) -> EventData:
    return EventData("w7.added", {"n": n}, event_id=event_id)


async def test_the_short_append_checks_the_version_and_refuses_a_stale_one(tmp_path: Path) -> None:
    """An exact expectation the stream does not show: WrongExpectedVersion, nothing written."""
    async with SQLiteEventStore(f"sqlite:///{tmp_path}/e.db") as store:
        s = StreamId("w7", "a")
        await store.append(s, [data("e0")], chronik.NO_STREAM)
        r = await store.append(s, [data("e1")], 0)
        assert (r.first_sequence, r.last_sequence) == (1, 1)
        with pytest.raises(chronik.WrongExpectedVersion):
            await store.append(s, [data("e2")], 0)
        with pytest.raises(chronik.WrongExpectedVersion):
            await store.append(StreamId("w7", "missing"), [data("e3")], 0)
        assert await store.stream_version(s) == 1
        assert [e.event_id async for e in store.read_stream(s)] == ["e0", "e1"]


async def test_a_duplicate_event_id_undoes_the_moved_version(tmp_path: Path) -> None:
    """An id stored in another stream: DuplicateEventError and the stream's version back."""
    async with SQLiteEventStore(f"sqlite:///{tmp_path}/e.db") as store:
        a, b = StreamId("w7", "a"), StreamId("w7", "b")
        await store.append(a, [data("x0")], chronik.NO_STREAM)
        await store.append(b, [data("y0")], chronik.NO_STREAM)
        with pytest.raises(chronik.DuplicateEventError):
            await store.append(b, [data("x0", 2)], 0)  # the version matches: the insert fails
        assert await store.stream_version(b) == 0
        r = await store.append(b, [data("y1")], 0)
        assert r.first_sequence == 1 and await store.stream_version(b) == 1


async def test_a_retried_append_returns_its_first_result(tmp_path: Path) -> None:
    """The same events again: the original result, whether the version moved on or not."""
    async with SQLiteEventStore(f"sqlite:///{tmp_path}/e.db") as store:
        s = StreamId("w7", "a")
        await store.append(s, [data("e0")], chronik.NO_STREAM)
        first = await store.append(s, [data("e1")], 0)
        assert await store.append(s, [data("e1")], 0) == first  # version moved: general way
        assert await store.append(s, [data("e1")], 1) == first  # version matches: the insert
        assert await store.stream_version(s) == 1


async def test_deleted_streams_are_not_appended_to_by_the_short_way(tmp_path: Path) -> None:
    """A soft-deleted stream shows no version; a tombstoned one refuses every append."""
    async with SQLiteEventStore(f"sqlite:///{tmp_path}/e.db") as store:
        soft, hard = StreamId("w7", "soft"), StreamId("w7", "hard")
        for s in (soft, hard):
            await store.append(s, [data(f"{s.aggregate_id}-0")], chronik.NO_STREAM)
        await store.delete_stream(soft, 0)
        await store.delete_stream(hard, 0, hard=True)
        with pytest.raises(chronik.WrongExpectedVersion):
            await store.append(soft, [data("soft-2")], 1)  # stored version 1, shown: none
        with pytest.raises(chronik.StreamDeleted):
            await store.append(hard, [data("hard-2")], 1)


async def test_subscribers_and_observers_see_short_appends(tmp_path: Path) -> None:
    """A live subscriber gets the event appended the short way; write observers are called."""
    async with SQLiteEventStore(f"sqlite:///{tmp_path}/e.db") as store:
        s = StreamId("w7", "a")
        await store.append(s, [data("e0")], chronik.NO_STREAM)
        seen: list[int] = []
        store.write_observers.append(lambda reqs, took: seen.append(len(reqs)))
        got: list[str] = []

        async def follow() -> None:
            async for event in store.subscribe():
                got.append(event.event_id)
                if len(got) == 2:
                    return

        task = asyncio.create_task(follow())
        await spin()
        await store.append(s, [data("e1")], 0)
        await asyncio.wait_for(task, 5)
        assert got == ["e0", "e1"] and seen == [1]


async def test_w7_through_sqlite_keeps_versions_and_idempotency(tmp_path: Path) -> None:
    """Cached dispatch on SQLite: versions in order, a repeated command id appends nothing."""
    async with make_app(f"sqlite:///{tmp_path}/app.db") as app:
        for i in range(30):
            r = await app.dispatch(msgspec.structs.replace(add(1, f"s{i % 3}"), command_id=f"c{i}"))
            assert r.version == i // 3
        again = await app.dispatch(msgspec.structs.replace(add(1, "s0"), command_id="c3"))
        assert again.duplicate and again.version == 1
        assert await app.load("w7", "s0") == 10


async def test_the_short_append_stores_metadata_and_content_types_as_given(tmp_path: Path) -> None:
    """Each mix of metadata (or none) and content type reads back exactly as appended."""
    async with SQLiteEventStore(f"sqlite:///{tmp_path}/e.db") as store:
        s = StreamId("w7", "a")
        await store.append(s, [data("e0")], chronik.NO_STREAM)
        kinds = [({}, chronik.JSON), ({"k": "v"}, chronik.JSON), ({}, "text/plain")]
        kinds.append(({"k": "ü"}, "application/octet-stream"))
        for i, (metadata, content_type) in enumerate(kinds, start=1):
            payload: Any = b"\x00\xffraw" if content_type != chronik.JSON else {"n": i}
            event = EventData("w7.other", payload, metadata, f"k{i}", content_type=content_type)
            r = await store.append(s, [event], i - 1)
            assert r.first_sequence == i
        got = [e async for e in store.read_stream(s, 1)]
        assert [(dict(e.metadata), e.content_type) for e in got] == kinds
        assert got[2].payload == b"\x00\xffraw" and got[0].json() == {"n": 1}


async def test_a_stale_stream_id_hint_never_writes_to_another_stream(tmp_path: Path) -> None:
    """A stream made in a unit that rolled back leaves a stale id; its row id, reused by
    another stream, is never written through it: the general way answers instead."""
    async with SQLiteEventStore(f"sqlite:///{tmp_path}/e.db") as store:
        x, y, z = StreamId("w7", "x"), StreamId("w7", "y"), StreamId("w7", "z")
        await store.append(y, [data("y0")], chronik.NO_STREAM)
        with pytest.raises(chronik.WrongExpectedVersion):
            async with store.transaction() as tx:
                tx.append(x, [data("x0")], chronik.NO_STREAM)  # x's row made, remembered
                tx.append(y, [data("y9")], 5)  # refused: the unit rolls back
        await store.append(z, [data("z0")], chronik.NO_STREAM)  # takes x's rolled-back row id
        with pytest.raises(chronik.WrongExpectedVersion):
            await store.append(x, [data("x1")], 0)  # x has no events: refused
        assert await store.stream_version(z) == 0 and await store.stream_version(x) is None
        await store.append(z, [data("z1")], 0)
        await store.append(x, [data("x0")], chronik.NO_STREAM)
        await store.append(x, [data("x1")], 0)
        assert [e.event_id async for e in store.read_stream(x)] == ["x0", "x1"]
        assert [e.event_id async for e in store.read_stream(z)] == ["z0", "z1"]


async def test_another_process_moving_the_version_sends_the_short_way_back(
    tmp_path: Path,
) -> None:
    """Two stores on one file: a version moved by the other is refused, then appended to."""
    url = f"sqlite:///{tmp_path}/e.db"
    async with SQLiteEventStore(url) as one, SQLiteEventStore(url) as two:
        s = StreamId("w7", "a")
        await one.append(s, [data("e0")], chronik.NO_STREAM)
        await one.append(s, [data("e1")], 0)  # one knows the stream's id now
        await two.append(s, [data("e2")], 1)
        with pytest.raises(chronik.WrongExpectedVersion):
            await one.append(s, [data("e3")], 1)
        assert (await one.append(s, [data("e3")], 2)).first_sequence == 3
        assert [e.sequence async for e in two.read_stream(s)] == [0, 1, 2, 3]
