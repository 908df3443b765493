"""The conformance suite's tests of lookups, snapshots, checkpoints, tables and leases.

A mixin of ``chronik.testing.conformance.EventStoreConformance``; use that class.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import chronik
from chronik import EventData, StreamId
from chronik.store.base import EventStore

__all__ = ["StateConformance", "collect", "ev"]


def ev(n: int = 0, etype: str = "thing.happened", **kw: Any) -> EventData:
    """A small event for tests."""
    return EventData(etype, {"n": n}, **kw)


async def collect(it: AsyncIterator[chronik.RecordedEvent]) -> list[chronik.RecordedEvent]:
    """All events of an async iterator."""
    return [e async for e in it]


class StateConformance:
    """Lookups by id, snapshots, checkpoints with epochs, read-model tables and leases."""

    # --- lookups, snapshots, checkpoints ------------------------------------------------------

    async def test_get_event_by_id(self, store: EventStore) -> None:
        """get_event finds a stored event by its id, and None for an unknown id."""
        s = StreamId("lookup", "l1")
        first, second = ev(0), ev(1)
        await store.append(s, [first, second])
        found = await store.get_event(second.event_id)
        assert found is not None and (found.stream, found.sequence) == (s, 1)
        assert found.json() == {"n": 1}
        assert await store.get_event(chronik.new_event_id()) is None
        with pytest.raises(chronik.ValidationError):
            await store.get_event("")

    async def test_snapshots_keep_the_latest(self, store: EventStore) -> None:
        """A snapshot is stored per stream; an older sequence never replaces a newer one."""
        s, other = StreamId("snap", "s1"), StreamId("snap", "s2")
        assert await store.load_snapshot(s) is None
        await store.save_snapshot(chronik.Snapshot(s, 9, "counter", 1, b'{"n":10}'))
        await store.save_snapshot(chronik.Snapshot(s, 4, "counter", 1, b'{"n":5}'))
        snap = await store.load_snapshot(s)
        assert snap is not None and (snap.sequence, snap.state) == (9, b'{"n":10}')
        assert snap.taken_at_us > 0
        await store.save_snapshot(chronik.Snapshot(s, 19, "counter", 2, b'{"n":20}'))
        snap = await store.load_snapshot(s)
        assert snap is not None and (snap.sequence, snap.schema_version) == (19, 2)
        assert await store.load_snapshot(other) is None
        for bad in (
            chronik.Snapshot(s, -1, "counter", 1, b"{}"),
            chronik.Snapshot(s, 1, "no spaces", 1, b"{}"),
            chronik.Snapshot(s, 1, "counter", 0, b"{}"),
        ):
            with pytest.raises(chronik.ValidationError):
                await store.save_snapshot(bad)
        snap = await store.load_snapshot(s)
        assert snap is not None and snap.sequence == 19

    async def test_checkpoints_commit_with_the_unit(self, store: EventStore) -> None:
        """A checkpoint saved in a unit is written with its appends, or not at all."""
        s = StreamId("proj", "p1")
        assert await store.load_checkpoint("receipts") is None
        r = await store.append(s, [ev(0)])
        async with store.transaction() as tx:
            tx.append(s, [ev(1)], 0)
            tx.save_checkpoint("receipts", r.position)
        cp = await store.load_checkpoint("receipts")
        assert cp is not None and (cp.position, cp.partition, cp.epoch) == (r.position, 0, 0)
        with pytest.raises(chronik.WrongExpectedVersion):
            async with store.transaction() as tx:
                tx.append(s, [ev(2)], 0)
                tx.save_checkpoint("receipts", tx_position := chronik.Position(10**9))
        cp = await store.load_checkpoint("receipts")
        assert cp is not None and cp.position == r.position != tx_position
        await store.save_checkpoint("receipts", r.position, partition=3)
        assert (await store.load_checkpoint("receipts", 3)) is not None
        with pytest.raises(chronik.ValidationError):
            await store.load_checkpoint("bad name")

    async def test_checkpoint_epochs_fence_older_writers(self, store: EventStore) -> None:
        """A write from an older lease epoch raises CheckpointFenced and changes nothing."""
        p1, p2 = chronik.Position(1), chronik.Position(2)
        await store.save_checkpoint("summary", p1, partition=1, epoch=2)
        await store.save_checkpoint("summary", p2, partition=1, epoch=2)
        with pytest.raises(chronik.CheckpointFenced) as info:
            async with store.transaction() as tx:
                tx.append(StreamId("fenced", "f1"), [ev(0)])
                tx.save_checkpoint("summary", p1, partition=1, epoch=1)
        assert info.value.stored_epoch == 2
        assert await store.stream_version(StreamId("fenced", "f1")) is None
        cp = await store.load_checkpoint("summary", 1)
        assert cp is not None and (cp.position, cp.epoch) == (p2, 2)
        await store.save_checkpoint("summary", p1, partition=1, epoch=3)
        cp = await store.load_checkpoint("summary", 1)
        assert cp is not None and (cp.position, cp.epoch) == (p1, 3)

    async def test_append_results_name_each_event_as_stored(self, store: EventStore) -> None:
        """AppendResult.positions and recorded_at_us match the events read back."""
        s = StreamId("result", "r1")
        await store.append(s, [ev(0)])
        r = await store.append(s, [ev(1), ev(2), ev(3)], 0)
        stored = await collect(store.read_stream(s, 1))
        assert r.positions == tuple(e.position for e in stored)
        assert r.position == stored[-1].position
        assert all(e.recorded_at_us == r.recorded_at_us for e in stored)
        async with store.transaction() as tx:
            tx.append(s, [ev(4)], 3)
            tx.append(StreamId("result", "r2"), [ev(5), ev(6)])
        for result in tx.results:
            got = await collect(store.read_stream(result.stream, result.first_sequence))
            assert result.positions == tuple(e.position for e in got)

    # --- read-model tables and leases ---------------------------------------------------------

    async def test_tables_commit_with_the_unit(self, store: EventStore) -> None:
        """Table writes: ensure, upsert (whole or partial), delete, clear, drop; all or nothing."""
        from chronik.store.base import TableSpec, TableWrite

        if not store.supports_tables:
            pytest.skip("this adapter has no read-model tables")
        spec = TableSpec(
            "rm_items",
            (
                ("id", "TEXT"),
                ("n", "INTEGER"),
                ("note", "TEXT"),
                ("data", "BLOB"),
                ("score", "REAL"),
            ),
            ("id",),
            (("n",),),
        )
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("ensure", spec.name, spec=spec)])
            tx.write_tables(
                [
                    TableWrite.upsert(
                        "rm_items",
                        {"id": f"i{i}", "n": i, "note": None, "data": b"\x00\x01", "score": 0.5},
                        ("id",),
                    )
                    for i in range(5)
                ]
            )
        top = await store.read_table("rm_items", order_by=("-n",), limit=2)
        assert [r["id"] for r in top] == ["i4", "i3"]
        assert top[0] == {"id": "i4", "n": 4, "note": None, "data": b"\x00\x01", "score": 0.5}
        assert [r["id"] for r in await store.read_table("rm_items", {"n": 2})] == ["i2"]
        assert len(await store.read_table("rm_items", {"note": None})) == 5
        async with store.transaction() as tx:
            tx.write_tables(
                [
                    TableWrite.upsert("rm_items", {"id": "i1", "n": 10}, ("id",)),
                    TableWrite.delete("rm_items", {"id": "i0"}),
                ]
            )
        (one,) = await store.read_table("rm_items", {"id": "i1"})
        assert (one["n"], one["data"]) == (10, b"\x00\x01")  # other columns kept
        with pytest.raises(chronik.WrongExpectedVersion):
            async with store.transaction() as tx:
                tx.append(StreamId("rm", "x"), [ev(0)], 5)
                tx.write_tables([TableWrite("clear", "rm_items")])
        assert len(await store.read_table("rm_items")) == 4
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("clear", "rm_items")])
        assert await store.read_table("rm_items") == []
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("drop", "rm_items")])
        with pytest.raises(chronik.ReadModelError):
            await store.read_table("rm_items")

    async def test_table_conditions_run_in_the_database(self, store: EventStore) -> None:
        """read_table filters by Range and In as well as equality, orders NULL first, and a
        keyset (``after``) pages through any order without gaps or repeats."""
        from chronik.store.base import TableSpec, TableWrite
        from chronik.store.tables import In, Range

        if not store.supports_tables:
            pytest.skip("this adapter has no read-model tables")
        spec = TableSpec(
            "rm_orders",
            (("id", "TEXT"), ("amount", "INTEGER"), ("status", "TEXT"), ("score", "REAL")),
            ("id",),
        )
        data = [  # id, amount, status, score
            ("a", 5, "open", 1.5),
            ("b", 10, "paid", None),
            ("c", 50, "open", 2.5),
            ("d", 99, "void", 0.5),
            ("e", 100, "paid", 2.5),
            ("f", None, "open", None),
            ("g", 10, "Zed", 1.0),
            ("h", 10, "\u00e9t\u00e9", 3.0),
        ]
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("ensure", spec.name, spec=spec)])
            tx.write_tables(
                TableWrite.upsert(
                    spec.name, {"id": i, "amount": a, "status": st, "score": sc}, ("id",)
                )
                for i, a, st, sc in data
            )

        async def ids(where: dict[str, Any], order: tuple[str, ...] = ("id",)) -> list[str]:
            return [r["id"] for r in await store.read_table(spec.name, where, order)]

        assert await ids({"amount": Range(ge=10, lt=100)}) == ["b", "c", "d", "g", "h"]
        assert await ids({"amount": Range(gt=10), "status": In(["open", "paid"])}) == ["c", "e"]
        assert await ids({"score": Range(le=1.5)}) == ["a", "d", "g"]
        assert await ids({"status": In([])}) == []
        assert await ids({"status": Range(ge="open", lt="q")}) == ["a", "b", "c", "e", "f"]
        assert await ids({"amount": None}) == ["f"]
        by_status = await store.read_table(spec.name, order_by=("status", "id"))
        assert [r["status"] for r in by_status][:2] == ["Zed", "open"]  # byte order
        assert by_status[-1]["status"] == "\u00e9t\u00e9"
        assert await ids({}, ("amount", "id")) == ["f", "a", "b", "g", "h", "c", "d", "e"]
        assert await ids({}, ("-score", "id")) == ["h", "c", "e", "a", "g", "d", "b", "f"]
        for order in (("amount", "id"), ("-amount", "id"), ("score", "-id"), ("-score", "id")):
            full = await ids({}, order)
            pages: list[str] = []
            after: dict[str, Any] | None = None
            while True:
                page = await store.read_table(spec.name, None, order, 3, after=after)
                pages += [r["id"] for r in page]
                if len(page) < 3:
                    break
                after = {c.removeprefix("-"): page[-1][c.removeprefix("-")] for c in order}
            assert pages == full, order
        for bad in (
            {"amount": Range()},
            {"amount": In([1, None])},
            {"amount": Range(gt=10**30)},
            {"amount": In(range(1001))},
        ):
            with pytest.raises(chronik.ValidationError) as info:
                await store.read_table(spec.name, bad)
            assert info.value.field == "amount"
        with pytest.raises(chronik.ValidationError) as info:
            await store.read_table(spec.name, None, ("amount",), after={"id": "a"})
        assert info.value.field == "after"
        with pytest.raises(chronik.ReadModelError):
            await store.read_table(spec.name, {"nope": Range(gt=1)})
