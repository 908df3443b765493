"""Catch-up fast paths, round three (issue 20, W8): ``ReadModel.upsert`` takes a row of known
columns out of its keyword arguments with one itemgetter, and the SQLite writer settles a
block of writes of one shape in C; each must give exactly what the general path gives."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.errors import ValidationError
from chronik.projections import ReadModel, Table
from chronik.store.sqlite.tables import write_tables
from chronik.store.tables import TableSpec, TableWrite

T = Table("t", {"id": str, "n": int, "s": str}, primary_key="id")
ONE = Table("one", {"id": str}, primary_key="id")
TENANTS = Table("tt", {"id": str, "n": int}, primary_key="id", per_tenant=True)


def model() -> ReadModel:
    return ReadModel(None, {"t": T, "one": ONE, "tt": TENANTS}, 1, tenant="acme")  # type: ignore[arg-type]


def test_known_columns_in_any_order_give_rows_in_the_first_upserts_column_order() -> None:
    """The second and later rows of a shape come out in its columns' order, sharing them."""
    rm = model()
    rm.upsert("t", id="a", n=1, s="x")
    rm.upsert("t", s="y", id="b", n=2)
    rm.upsert("t", n=3, s="z", id="c")
    first, second, third = rm.writes
    assert first.columns == ("id", "n", "s")
    assert second.columns is first.columns and third.columns is first.columns
    assert [w.row for w in rm.writes] == [("a", 1, "x"), ("b", 2, "y"), ("c", 3, "z")]
    assert {(w.op, w.table, w.key) for w in rm.writes} == {("upsert", "t__g1", ("id",))}


def test_other_columns_of_the_same_width_or_another_width_still_fail_every_time() -> None:
    """A row the itemgetter cannot take goes the general way: unknown columns fail there."""
    rm = model()
    rm.upsert("t", id="a", n=1, s="x")
    for _ in range(2):
        with pytest.raises(ValidationError, match="no column"):
            rm.upsert("t", id="b", n=2, nope="y")
        with pytest.raises(ValidationError, match="no column"):
            rm.upsert("t", id="b", n=2, s="y", nope=1)
        with pytest.raises(ValidationError, match="primary key"):
            rm.upsert("t", n=2, s="y")
    rm.upsert("t", id="c", n=3)  # a narrower shape of known columns: a patch
    assert [w.row for w in rm.writes] == [("a", 1, "x"), ("c", 3)]


def test_two_shapes_of_one_width_in_turn_each_keep_their_columns() -> None:
    """Patches of other columns of the same width alternate: each row as it was given."""
    rm = model()
    for i in range(3):
        rm.upsert("t", id=f"k{i}", n=i)
        rm.upsert("t", s=f"v{i}", id=f"k{i}")
    got = [dict(zip(w.columns, w.row, strict=True)) for w in rm.writes]
    assert got == [
        d for i in range(3) for d in ({"id": f"k{i}", "n": i}, {"id": f"k{i}", "s": f"v{i}"})
    ]


@pytest.mark.parametrize(
    "call",
    [
        lambda rm: rm.upsert("t", {"id": "a", "n": 1}),
        lambda rm: rm.upsert("t", row={"id": "a", "n": 1}),
        lambda rm: rm.upsert(table="t", id="a", n=1),
        lambda rm: rm.upsert(table="t", row={"id": "a"}, n=1),
        lambda rm: rm.upsert("t", {"id": "a"}, n=1),
    ],
)
def test_the_keyword_and_mapping_forms_stage_the_same_write(call: Any) -> None:
    """table= and row= as keywords, a mapping, or both: one write, as before (twice: fast)."""
    for _ in range(2):
        rm = model()
        rm.upsert("t", id="a", n=1)
        call(rm)
        assert rm.writes[0] == rm.writes[1]


def test_one_column_and_per_tenant_tables_stage_as_before() -> None:
    """A one-column row is a tuple of one; a per-tenant row gets its tenant, every time."""
    rm = model()
    for i in range(2):
        rm.upsert("one", id=f"k{i}")
        rm.upsert("tt", id=f"k{i}", n=i)
    assert [w.row for w in rm.writes] == [("k0",), ("acme", "k0", 0), ("k1",), ("acme", "k1", 1)]
    with pytest.raises(ValidationError, match="tenant"):
        rm.upsert("tt", id="k2", n=2, tenant="other")


SPEC = TableWrite("ensure", "w", spec=TableSpec("w", (("id", "TEXT"), ("n", "INTEGER")), ("id",)))


def up(key: str, n: int) -> TableWrite:
    return TableWrite("upsert", "w", ("id", "n"), (key, n), None, ("id",))


def gone(key: str) -> TableWrite:
    return TableWrite("delete", "w", ("id",), (key,))


@pytest.mark.parametrize(
    "writes",
    [
        [up("a", 1), up("b", 2), up("a", 3)],  # one block
        [up("a", 1), up("b", 2), up("c", 3), gone("b")],  # a block, then another shape
        [up("a", 1), up("b", 2), gone("a"), up("a", 3)],  # the shape again after another
        [up("a", 1), gone("a"), up("b", 2), up("a", 3), up("c", 4)],
        [up("a", 1), up("b", 2)],
    ],
)
def test_a_block_of_one_shape_applies_as_write_by_write(writes: list[TableWrite]) -> None:
    """Only writes of one shape up to its last one are one statement; otherwise, in order."""
    grouped, single = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    write_tables(grouped, [SPEC])
    write_tables(single, [SPEC])
    write_tables(grouped, writes)
    for w in writes:
        write_tables(single, [w])
    query = "SELECT id, n FROM w ORDER BY id"
    assert grouped.execute(query).fetchall() == single.execute(query).fetchall()


SPEC_V = TableWrite("ensure", "v", spec=TableSpec("v", (("id", "TEXT"), ("n", "INTEGER")), ("id",)))


def up_v(key: str, n: int) -> TableWrite:
    return TableWrite("upsert", "v", ("id", "n"), (key, n), None, ("id",))


@pytest.mark.parametrize(
    "writes",
    [
        [up("a", 1), up_v("a", 10), up("b", 2), up("a", 3)],  # another table between
        [up("a", 1), up("b", 2), up_v("a", 10), up_v("b", 20), up("c", 3)],
        [up_v("a", 1), up_v("b", 2), up_v("c", 3), up("a", 4), up("b", 5), up("c", 6)],
        [up("a", 1), up("b", 2), up("c", 3), up_v("a", 1), gone("a"), up("a", 9)],
    ],
)
def test_a_page_mixing_tables_applies_as_write_by_write(writes: list[TableWrite]) -> None:
    """Writes of two tables with the same columns, interleaved: each table's rows in order."""
    grouped, single = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    for conn in (grouped, single):
        write_tables(conn, [SPEC, SPEC_V])
    write_tables(grouped, writes)
    for w in writes:
        write_tables(single, [w])
    for table in ("w", "v"):
        query = f"SELECT id, n FROM {table} ORDER BY id"
        assert grouped.execute(query).fetchall() == single.execute(query).fetchall()


def test_two_generations_share_a_table_but_write_their_own() -> None:
    """ReadModels of generations 1 and 2 of one Table (a blue/green rebuild): own names."""
    tables = {"t": T}
    one, two = ReadModel(None, tables, 1), ReadModel(None, tables, 2)  # type: ignore[arg-type]
    for rm in (one, two, one, two):
        rm.upsert("t", id="a", n=1, s="x")
    assert [w.table for w in one.writes] == ["t__g1"] * 2
    assert [w.table for w in two.writes] == ["t__g2"] * 2


def test_a_failed_handler_drops_its_fast_path_writes() -> None:
    """discard() after fast-path upserts leaves the writes of the events that succeeded."""
    rm = model()
    rm.upsert("t", id="a", n=1, s="x")
    rm.keep()
    rm.upsert("t", id="b", n=2, s="y")
    rm.upsert("t", s="z", n=3, id="c")
    rm.discard()
    rm.upsert("t", n=4, id="d", s="w")
    assert [w.row for w in rm.writes] == [("a", 1, "x"), ("d", 4, "w")]


async def test_reads_see_the_fast_path_writes_and_patches(tmp_path: Path) -> None:
    """get/query lay fast-path rows, narrower patches and deletes over the committed rows."""
    async with chronik.open_store(f"sqlite:///{tmp_path / 'o.db'}") as store:
        spec = T.spec(1)
        async with store.transaction() as tx:
            tx.write_tables([TableWrite("ensure", spec.name, spec=spec)])
            tx.write_tables(
                [TableWrite.upsert(spec.name, {"id": "c", "n": 7, "s": "old"}, ("id",))]
            )
        rm = ReadModel(store, {"t": T}, 1)
        rm.upsert("t", id="a", n=1, s="x")
        rm.upsert("t", s="y", id="b", n=2)  # the fast path
        assert await rm.get("t", id="b") == {"id": "b", "n": 2, "s": "y"}
        rm.upsert("t", id="a", n=5)  # a patch of another width
        rm.upsert("t", n=8, id="c")  # a patch of a committed row
        rm.upsert("t", n=3, s="z", id="b")  # the fast path again, after a patch
        rm.delete("t", id="a")
        assert await rm.get("t", id="a") is None
        assert await rm.get("t", id="b") == {"id": "b", "n": 3, "s": "z"}
        assert await rm.get("t", id="c") == {"id": "c", "n": 8, "s": "old"}
        rm.upsert("t", id="a", s="back", n=0)  # the fast path over a delete: the whole row
        got = sorted(await rm.query("t"), key=lambda r: r["id"])
        assert got == [
            {"id": "a", "n": 0, "s": "back"},
            {"id": "b", "n": 3, "s": "z"},
            {"id": "c", "n": 8, "s": "old"},
        ]
