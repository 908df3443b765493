"""Catch-up fast paths, round two (issue 20, W8): the batch value check in slices of one row's
width, the SQLite writer's grouping by identity, the page loop's handler lookup per type run;
each must give exactly what the general path gives."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.errors import ReadModelError
from chronik.projections import ErrorPolicy, Projection, ReadModel, Table, batch
from chronik.store.sqlite.tables import write_tables
from chronik.store.tables import TableSpec, TableWrite, check_all, check_values

WIDTHS = (3, 1, 4, 0, 2, 5)


class IndexOnly:
    """An int-like value that is no int (numpy's int64 is one): no adapter stores it."""

    def __index__(self) -> int:
        return 1


def rows_of(widths: tuple[int, ...]) -> list[TableWrite]:
    """Upserts whose rows have the given widths, every value storable."""
    values: list[Any] = ["s", 7, 1.5, None, b"b", True]
    return [
        TableWrite("upsert", "t", tuple(f"c{k}" for k in range(w)), tuple(values[:w]), None, ())
        for w in widths
    ]


@pytest.mark.parametrize("bad", ["nul\x00", "\udc80", 2**63, float("nan"), IndexOnly(), [1]])
def test_a_bad_value_at_any_place_of_rows_of_any_widths_fails_as_check_values(bad: Any) -> None:
    """Rows of mixed widths do not line up in slices: a bad value anywhere is still found."""
    good = rows_of(WIDTHS)
    assert check_all(good) == good
    for i, w in enumerate(good):
        for k in range(len(w.row)):
            row = list(w.row)
            row[k] = bad
            bad_write = w._replace(row=tuple(row))
            writes = [*good[:i], bad_write, *good[i + 1 :]]
            with pytest.raises(ReadModelError) as one:
                check_values(bad_write)
            with pytest.raises(ReadModelError) as batch_error:
                check_all(writes)
            assert str(batch_error.value) == str(one.value)


def test_the_batch_check_hands_back_a_list_it_is_given_and_copies_an_iterator() -> None:
    """A list passes as it is (no copy per page); any other iterable is read once."""
    good = rows_of((2, 2, 2))
    assert check_all(good) is good
    assert check_all(iter(good)) == good
    assert check_all(()) == []


def _apply_one_by_one(conn: sqlite3.Connection, writes: list[TableWrite]) -> None:
    for w in writes:
        write_tables(conn, [w])


def test_sqlite_groups_equal_writes_that_are_not_identical_and_keeps_order() -> None:
    """Equal but separate column tuples group; other shapes between them apply in order."""
    spec = TableWrite(
        "ensure",
        "t",
        spec=TableSpec("t", (("id", "TEXT"), ("n", "INTEGER")), ("id",)),
    )

    def up(i: int, n: int) -> TableWrite:
        table = "".join(["t"])  # an equal str, another object
        return TableWrite("upsert", table, tuple(["id", "n"]), (f"k{i}", n), None, ("id",))

    writes = [spec, *(up(i, i) for i in range(5)), TableWrite("delete", "t", ("id",), ("k1",))]
    writes += [up(1, 10), up(2, 20), TableWrite("upsert", "t", ("id",), ("k9",), None, ("id",))]
    grouped, single = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    write_tables(grouped, writes)
    _apply_one_by_one(single, writes)
    query = "SELECT id, n FROM t ORDER BY id"
    got = grouped.execute(query).fetchall()
    assert got == single.execute(query).fetchall()
    assert got == [("k0", 0), ("k1", 10), ("k2", 20), ("k3", 3), ("k4", 4), ("k9", None)]


async def test_a_page_of_alternating_types_reaches_each_type_handler_and_drops_failed_writes(
    tmp_path: Path,
) -> None:
    """Each type change finds its handler; a failed handler's rows go, its neighbours' stay."""
    p = Projection(
        "alt",
        tables=[Table("seen", {"id": str, "kind": str}, primary_key="id")],
        policy=ErrorPolicy(retries=0, then="skip"),
    )

    @p.on("a")
    def on_a(e: chronik.RecordedEvent, rm: Any) -> None:
        rm.upsert("seen", id=str(e.sequence), kind="a")

    @p.on("b")
    async def on_b(e: chronik.RecordedEvent, rm: Any) -> None:
        rm.upsert("seen", id=str(e.sequence), kind="b")
        if e.sequence == 3:
            raise RuntimeError("fails after writing")

    async with chronik.open_store(f"sqlite:///{tmp_path}/e.db") as store:
        types = ["a", "b", "b", "b", "a", "b"]
        await store.append(chronik.StreamId("d", "s"), [chronik.EventData(t) for t in types])
        page = (await store.read_page(None, 10, types=["a", "b"])).events
        rm = ReadModel(store, p.tables, 1)

        async def failing(_error: str, _first: bool) -> None:
            return None

        done = await batch.handle(p, page, rm, None, set(), ("alt", 0), failing, lambda: False)
    rows = [(w.row[0], w.row[1]) for w in done.writes]
    assert rows == [("0", "a"), ("1", "b"), ("2", "b"), ("4", "a"), ("5", "b")]
    assert done.error is not None and "fails after writing" in done.error
    assert done.position == page[-1].position and not done.stopped
