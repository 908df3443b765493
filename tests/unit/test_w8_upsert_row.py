"""``ReadModel.upsert_row``: a whole row as a tuple in the table's declared column order, the
same write as ``upsert`` with every column (issue 20, W8); bad rows fail naming ``values``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import chronik
from chronik.errors import ValidationError
from chronik.projections import Projection, ProjectionProcessor, ReadModel, Table, query

T = Table("t", {"id": str, "n": int, "s": str}, primary_key="id")
TENANTS = Table("tt", {"id": str, "n": int}, primary_key="id", per_tenant=True)


def model(generation: int = 1) -> ReadModel:
    """A ReadModel of ``t`` and the per-tenant ``tt`` (tenant acme), no store needed."""
    return ReadModel(None, {"t": T, "tt": TENANTS}, generation, tenant="acme")  # type: ignore[arg-type]


@pytest.mark.parametrize("row_first", [True, False])
def test_a_row_is_the_write_of_upsert_with_every_column(row_first: bool) -> None:
    """Whichever comes first, both forms stage equal writes sharing one column tuple; keywords
    in another order stage the same row as a mapping."""
    rm = model()

    def as_row() -> None:
        rm.upsert_row("t", ("a", 1, "x"))

    def as_keywords() -> None:
        rm.upsert("t", id="a", n=1, s="x")

    for call in (as_row, as_keywords) if row_first else (as_keywords, as_row):
        call()
        call()
    assert len(rm.writes) == 4 and len(set(rm.writes)) == 1
    assert len({id(w.columns) for w in rm.writes}) == 1
    w = rm.writes[0]
    assert (w.op, w.table, w.columns, w.row, w.key) == (
        "upsert",
        "t__g1",
        ("id", "n", "s"),
        ("a", 1, "x"),
        ("id",),
    )
    other = model()
    other.upsert("t", s="x", n=1, id="a")
    other.upsert_row("t", ("a", 1, "x"))
    first, second = (dict(zip(w.columns, w.row, strict=True)) for w in other.writes)
    assert first == second == {"id": "a", "n": 1, "s": "x"}


def test_a_list_is_taken_as_a_tuple_and_each_generation_writes_its_own_table() -> None:
    """A list row is copied to a tuple; a ReadModel of generation 2 writes ``t__g2``."""
    row = ["a", 1, "x"]
    rm, rm2 = model(), model(2)
    rm.upsert_row("t", row)
    rm2.upsert_row("t", row)
    row[1] = 99
    assert [(w.table, w.row) for w in rm.writes + rm2.writes] == [
        ("t__g1", ("a", 1, "x")),
        ("t__g2", ("a", 1, "x")),
    ]


@pytest.mark.parametrize(
    ("values", "got"),
    [(("a", 1), "2 values"), (("a", 1, "x", 2), "4 values"), ("ab1", "str"), ({"id": "a"}, "dict")],
)
def test_a_row_of_another_width_or_kind_fails_naming_values(values: Any, got: str) -> None:
    """Not a tuple/list of one value per column: ValidationError (first call and later)."""
    rm = model()
    for _ in range(2):
        with pytest.raises(ValidationError, match=got) as caught:
            rm.upsert_row("t", values)
        assert caught.value.field == "values" and "('id', 'n', 's')" in str(caught.value)
        rm.upsert_row("t", ("ok", 1, "y"))
    with pytest.raises(ValidationError, match="unknown table"):
        rm.upsert_row("nope", ("a",))
    assert [w.row for w in rm.writes] == [("ok", 1, "y")] * 2


def test_a_per_tenant_row_leaves_the_tenant_out() -> None:
    """The tenant column is chronik's: the row is the other columns, the tenant goes first."""
    rm = model()
    rm.upsert_row("tt", ("a", 1))
    rm.upsert_row("tt", ["b", 2])
    assert [w.row for w in rm.writes] == [("acme", "a", 1), ("acme", "b", 2)]
    with pytest.raises(ValidationError, match="\\('id', 'n'\\)"):
        rm.upsert_row("tt", ("acme", "a", 1))


async def test_rows_read_back_through_get_and_commit_as_keywords_do(tmp_path: Path) -> None:
    """A projection writing rows reads its own writes and commits what a keyword one does."""
    columns = {"id": str, "n": int, "last": int}
    by_rows = Projection("rows", tables=[Table("c", columns, primary_key="id")])
    by_keywords = Projection("kw", tables=[Table("k", columns, primary_key="id")])

    @by_rows.on("w.tick")
    async def rows(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("c", id=e.stream.aggregate_id)
        rm.upsert_row("c", (e.stream.aggregate_id, (row["n"] if row else 0) + 1, e.sequence))

    @by_keywords.on("w.tick")
    async def keywords(e: chronik.RecordedEvent, rm: ReadModel) -> None:
        row = await rm.get("k", id=e.stream.aggregate_id)
        n = (row["n"] if row else 0) + 1
        rm.upsert("k", id=e.stream.aggregate_id, n=n, last=e.sequence)

    async with chronik.open_store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        for i in range(30):
            await store.append(chronik.StreamId("w", f"s{i % 4}"), [chronik.EventData("w.tick")])
        head = await store.head()
        assert head is not None
        for p in (by_rows, by_keywords):
            async with ProjectionProcessor(store, p) as proc:
                await proc.wait_for(head)
        got = await query(store, "rows", "c", order_by=("id",))
        assert got == await query(store, "kw", "k", order_by=("id",))
        assert [(r["id"], r["n"], r["last"]) for r in got] == [
            ("s0", 8, 7),
            ("s1", 8, 7),
            ("s2", 7, 6),
            ("s3", 7, 6),
        ]
