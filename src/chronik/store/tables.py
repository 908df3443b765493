"""Read-model tables and leases as a unit of work writes them: specs, writes, their checks.

Adapters with ``supports_tables`` run these writes in the same transaction as the unit's
appends; identifiers are validated here once, values are always bound parameters.
"""

from __future__ import annotations

import re
from typing import Any, Final, NamedTuple

from chronik.errors import ValidationError

__all__ = [
    "LEASES_TABLE",
    "SQL_TYPES",
    "TABLE_OPS",
    "TableSpec",
    "TableWrite",
    "check_identifier",
    "check_table_write",
]


class TableSpec(NamedTuple):
    """A read-model table: validated identifiers, SQL column types, primary key columns."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (column, one of SQL_TYPES)
    primary_key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()


class TableWrite(NamedTuple):
    """One read-model write committed with a unit of work.

    ``op`` is ``ensure`` (create ``spec`` if missing), ``drop``, ``clear`` (delete every row),
    ``upsert`` (insert ``row`` into ``columns``, or update those columns of the row with the
    same primary key ``key``) or ``delete`` (the row whose ``columns`` equal ``row``). Values
    are always bound parameters.

    ``lease`` claims or renews (name, partition) in ``chronik_leases`` for ``owner`` until the
    database clock passes now + ``ttl_us``; it raises LeaseHeld (the whole unit fails) while
    another owner's lease is unexpired, and bumps the lease epoch when the owner changes.
    ``release`` lets the owner's lease expire now.
    """

    op: str
    table: str
    columns: tuple[str, ...] = ()
    row: tuple[Any, ...] = ()
    spec: TableSpec | None = None
    key: tuple[str, ...] = ()  # upsert: the primary key columns

    @classmethod
    def upsert(cls, table: str, values: dict[str, Any], key: tuple[str, ...]) -> TableWrite:
        """An upsert of ``values`` (column -> value) keyed by the ``key`` columns."""
        return cls("upsert", table, tuple(values), tuple(values.values()), None, key)

    @classmethod
    def delete(cls, table: str, values: dict[str, Any]) -> TableWrite:
        """A delete of the row whose columns equal ``values``."""
        return cls("delete", table, tuple(values), tuple(values.values()))


SQL_TYPES: Final = frozenset({"INTEGER", "TEXT", "REAL", "BLOB"})
TABLE_OPS: Final = frozenset({"ensure", "drop", "clear", "upsert", "delete", "lease", "release"})
LEASES_TABLE: Final = "chronik_leases"
_LEASE_COLUMNS: Final = {
    "lease": ("name", "partition", "owner", "ttl_us"),
    "release": ("name", "partition", "owner"),
}
_IDENT_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_identifier(name: object, what: str = "table") -> str:
    """``name`` if it is a safe SQL identifier (``[a-z_][a-z0-9_]{0,62}``), else ValidationError."""
    if not isinstance(name, str) or not _IDENT_RE.fullmatch(name):
        raise ValidationError(
            f"invalid {what} name {name!r}: expected [a-z_][a-z0-9_]{{0,62}}", field=what
        )
    return name


_checked: set[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = set()


def check_table_write(w: TableWrite) -> TableWrite:
    """Validate every identifier of a read-model write (values are bound, never spliced)."""
    if not isinstance(w, TableWrite) or w.op not in TABLE_OPS:
        raise ValidationError(f"expected a TableWrite, got {w!r}", field="tables")
    signature = (w.op, w.table, w.columns, w.key)
    if signature in _checked:
        return w
    if type(w.columns) is not tuple or type(w.row) is not tuple or len(w.columns) != len(w.row):
        raise ValidationError(f"a write to {w.table!r} needs one value per column")
    check_identifier(w.table)
    for column in (*w.columns, *w.key):
        check_identifier(column, "column")
    if w.op in _LEASE_COLUMNS and (w.table != LEASES_TABLE or w.columns != _LEASE_COLUMNS[w.op]):
        raise ValidationError(f"a {w.op} needs {LEASES_TABLE} and {_LEASE_COLUMNS[w.op]}")
    if w.op == "ensure":
        spec = w.spec
        if spec is None or spec.name != w.table or not spec.columns or not spec.primary_key:
            raise ValidationError(f"ensure of {w.table} needs its TableSpec", field="tables")
        names = {check_identifier(c, "column") for c, _ in spec.columns}
        if any(t not in SQL_TYPES for _, t in spec.columns):
            raise ValidationError(f"column types of {w.table} must be in {sorted(SQL_TYPES)}")
        for cols in (spec.primary_key, *spec.indexes):
            if not cols or not set(cols) <= names:
                raise ValidationError(f"key or index {cols!r} names unknown columns of {w.table}")
        return w
    elif w.op == "upsert" and (not w.key or not set(w.key) <= set(w.columns)):
        raise ValidationError(f"an upsert into {w.table} needs every primary key column")
    elif w.op == "delete" and not w.columns:
        raise ValidationError(f"a delete from {w.table} needs the primary key")
    if len(_checked) > 4096:
        _checked.clear()
    _checked.add(signature)
    return w
