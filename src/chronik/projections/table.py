"""A projection's read-model table declaration (``Table``) and the physical name of each
generation of it; ``chronik.projections.readmodel`` writes and reads through them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from chronik.errors import ValidationError
from chronik.store.base import TableSpec, check_identifier

__all__ = ["MAX_TABLE_NAME", "TENANT", "Table", "physical_name"]

#: The column a ``per_tenant`` table keys its rows by (first in its primary key).
TENANT: Final = "tenant"

_SQL_TYPES: Final[dict[object, str]] = {
    int: "INTEGER",
    bool: "INTEGER",
    str: "TEXT",
    float: "REAL",
    bytes: "BLOB",
    "integer": "INTEGER",
    "text": "TEXT",
    "real": "REAL",
    "blob": "BLOB",
}
MAX_TABLE_NAME: Final = 48


def physical_name(table: str, generation: int) -> str:
    """The name of a table's generation in the database (``receipts`` gen 2: ``receipts__g2``)."""
    return f"{table}__g{generation}"


class Table:
    """A read-model table: ``Table("receipts", {"id": str, "amount": int}, primary_key="id")``.

    Column types are ``int``, ``str``, ``float``, ``bytes``, ``bool`` (or their SQL names).
    Every generation of a projection gets its own physical table (see ``physical_name``).
    ``per_tenant=True`` adds a TEXT column ``tenant`` as the first column of the primary key
    (and of each index): a handler's writes and reads are then scoped to the tenant of the
    event it handles, with no change to its code.
    """

    def __init__(
        self,
        name: str,
        columns: Mapping[str, object],
        primary_key: str | Sequence[str],
        indexes: Iterable[Sequence[str]] = (),
        *,
        per_tenant: bool = False,
    ) -> None:
        check_identifier(name)
        if len(name) > MAX_TABLE_NAME or name.startswith("chronik_"):
            raise ValidationError(
                f"invalid table name {name!r}: at most {MAX_TABLE_NAME} characters, "
                "and the chronik_ prefix is reserved",
                field="table",
            )
        if not columns:
            raise ValidationError(f"table {name!r} needs columns", field="columns")
        if per_tenant:
            if TENANT in columns:
                raise ValidationError(
                    f"table {name!r} is per tenant: chronik adds its {TENANT!r} column",
                    field="columns",
                )
            columns = {TENANT: str, **columns}
        cols: list[tuple[str, str]] = []
        for column, kind in columns.items():
            check_identifier(column, "column")
            sql = _SQL_TYPES.get(kind.lower() if isinstance(kind, str) else kind)
            if sql is None:
                raise ValidationError(
                    f"column {name}.{column} has type {kind!r}: use int, str, float, bytes or bool",
                    field="columns",
                )
            cols.append((column, sql))
        pk = (primary_key,) if isinstance(primary_key, str) else tuple(primary_key)
        index_list = tuple(tuple(i) for i in indexes)
        if per_tenant:
            pk = (TENANT, *pk)
            index_list = tuple((TENANT, *i) for i in index_list)
        for key in (pk, *index_list):
            if not key or not set(key) <= set(columns):
                raise ValidationError(
                    f"key {key!r} of table {name!r} names unknown columns", field="primary_key"
                )
        self.name = name
        self.per_tenant = per_tenant
        # column tuple of an upsert -> (positions of the primary key in it, whether it is full)
        self.shapes: dict[tuple[str, ...], tuple[tuple[int, ...], bool]] = {}
        # a checked column tuple -> its first copy: the writes of a shape share one tuple (no
        # new tuple kept per row, and runs of equal writes compare by identity)
        self.checked: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.columns: tuple[tuple[str, str], ...] = tuple(cols)
        self.column_names = frozenset(columns)
        self.primary_key = pk
        self.indexes = index_list

    def shape(self, columns: tuple[str, ...]) -> tuple[tuple[int, ...], bool]:
        """Check the columns of an upsert once; where the primary key sits in them."""
        unknown = set(columns) - self.column_names
        if unknown:
            raise ValidationError(f"table {self.name!r} has no column(s) {sorted(unknown)}")
        if not set(self.primary_key) <= set(columns):
            raise ValidationError(
                f"an upsert into {self.name!r} needs its primary key {self.primary_key}"
            )
        shape = (
            tuple(columns.index(c) for c in self.primary_key),
            len(set(columns)) == len(self.columns),
        )
        if len(self.shapes) < 256:
            self.shapes[columns] = shape
            self.checked[columns] = columns
        return shape

    def spec(self, generation: int) -> TableSpec:
        """The TableSpec of one generation of this table."""
        return TableSpec(
            physical_name(self.name, generation), self.columns, self.primary_key, self.indexes
        )

    def __repr__(self) -> str:
        return f"<Table {self.name} pk={','.join(self.primary_key)}>"
