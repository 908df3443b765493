"""The fast paths of projection catch-up (issue 20): batch value checks, shared column tuples,
one-type pages read without their type column; each must give what the general path gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.errors import ReadModelError, ValidationError
from chronik.projections import ReadModel, Table
from chronik.store.tables import TableWrite, check_all, check_values

T = Table("t", {"id": str, "s": str, "n": int, "f": float, "b": bytes, "ok": bool}, "id")
COLS = ("id", "s", "n", "f", "b", "ok")


def upsert(*row: Any, columns: tuple[str, ...] = COLS) -> TableWrite:
    """An upsert of ``row`` into table t."""
    return TableWrite("upsert", "t__g1", columns, row, None, ("id",))


GOOD = [
    upsert("a", "plain", 1, 1.5, b"x", True),
    upsert("b", "ünïcode ✓", -(2**63), float("inf"), b"", False),
    upsert("c", None, 2**63 - 1, None, None, None),
    upsert("d", "short", columns=("id", "s")),
    TableWrite("delete", "t__g1", ("id",), ("a",)),
    TableWrite("clear", "t__g1"),
]


def test_a_batch_of_storable_values_passes_whole_and_in_order() -> None:
    """Every kind of storable value (mixed per column, rows of any length) passes unchanged."""
    assert check_all(GOOD) == GOOD
    assert check_all(iter(GOOD)) == GOOD
    assert check_all([]) == []


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("s", "nul\x00inside", "NUL"),
        ("s", "lone \ud800 surrogate", "UTF-8"),
        ("n", 2**63, "int64"),
        ("n", -(2**63) - 1, "int64"),
        ("f", float("nan"), "NaN"),
        ("b", object(), "type object"),
    ],
)
def test_one_bad_value_in_a_batch_fails_it_naming_the_column(
    column: str, value: Any, problem: str
) -> None:
    """One unstorable value anywhere in a batch raises what check_values raises for it."""
    row: list[Any] = ["z", "s", 1, 1.0, b"", True]
    row[COLS.index(column)] = value
    bad = upsert(*row)
    with pytest.raises(ReadModelError) as one:
        check_values(bad)
    with pytest.raises(ReadModelError) as batch:
        check_all([*GOOD, bad, *GOOD])
    assert str(batch.value) == str(one.value)
    assert batch.value.column == column and problem in str(batch.value)


def test_subclasses_of_storable_types_are_checked_as_their_base() -> None:
    """An int or str subclass passes the batch check as check_values lets it pass."""

    class Name(str):
        pass

    class Count(int):
        pass

    good = [upsert(Name("a"), Name("ok"), Count(3), 0.0, b"", True)]
    assert check_all(good) == good
    with pytest.raises(ReadModelError, match="int64"):
        check_all([upsert("a", "s", Count(2**64), 0.0, b"", True)])


def test_upserts_of_one_shape_share_one_column_tuple() -> None:
    """Rows of the same columns carry the same tuple; unknown columns still fail, every time."""
    rm = ReadModel(None, {"t": T}, 1)  # type: ignore[arg-type]
    rm.upsert("t", id="a", n=1)
    rm.upsert("t", {"id": "b"}, n=2)
    rm.upsert("t", id="c", s="x")
    first, second, third = rm.writes
    assert first.columns is second.columns and first.columns == ("id", "n")
    assert third.columns == ("id", "s") and second.row == ("b", 2)
    for _ in range(2):
        with pytest.raises(ValidationError, match="no column"):
            rm.upsert("t", id="d", nope=1)
        with pytest.raises(ValidationError, match="primary key"):
            rm.upsert("t", n=1)
    assert len(rm.writes) == 3


async def test_a_page_of_one_type_equals_that_type_in_a_page_of_all(tmp_path: Path) -> None:
    """SQLite's one-type page (type not read) gives the events a general page gives."""
    async with chronik.open_store(f"sqlite:///{tmp_path}/e.db") as store:
        for i in range(6):
            await store.append(
                chronik.StreamId("d", f"s{i % 3}"),
                [
                    chronik.EventData(
                        "kept", {"i": i}, metadata={"k": str(i)}, tags=[f"t:{i}", "all:x"]
                    ),
                    chronik.EventData("other", b"\x01", content_type="application/x"),
                ],
            )
        one = (await store.read_page(None, 100, types=["kept"])).events  # streams not cached
        every = (await store.read_page(None, 100, types=["kept", "other"])).events
        assert one == [e for e in every if e.type == "kept"] and len(one) == 6
        assert one[0].tags == ("all:x", "t:0") and one[0].metadata["k"] == "0"
        after = (await store.read_page(one[2].position, 2, types=["kept"])).events
        assert after == one[3:5]
