"""The SQL the adapters share for read-model tables (``write_sql``, the ``read_table`` conditions
and keysets) and the reference ``read_table`` in Python.

Conditions come from ``tables.check_where`` and keysets from ``tables.check_after``; column
names are validated identifiers, values are always bound parameters (``param`` returns the
placeholder of a value it records). Every adapter orders NULL before any value ascending (after
every value descending), and a keyset continues exactly where that order left off.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any, Final

from chronik.errors import ReadModelError
from chronik.store.tables import Condition, TableWrite

__all__ = ["matches", "order_sql", "sort_rows", "where_sql", "write_sql"]

_SQL_OPS: Final = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_PY_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
Order = tuple[tuple[str, bool], ...]


def _equal(column: str, value: Any, param: Callable[[Any], str]) -> str:
    return f"{column} IS NULL" if value is None else f"{column} = {param(value)}"


def _keyset_sql(order: Order, after: tuple[Any, ...], param: Callable[[Any], str]) -> str:
    ors = []
    for k, ((column, desc), value) in enumerate(zip(order, after, strict=True)):
        if desc and value is None:
            continue  # NULL sorts last descending: nothing differs from it here and comes after
        ands = [_equal(c, v, param) for (c, _), v in zip(order[:k], after[:k], strict=True)]
        if value is None:
            ands.append(f"{column} IS NOT NULL")
        elif desc:
            ands.append(f"({column} < {param(value)} OR {column} IS NULL)")
        else:
            ands.append(f"{column} > {param(value)}")
        ors.append("(" + " AND ".join(ands) + ")")
    return "(" + " OR ".join(ors) + ")" if ors else "1 = 0"


def where_sql(
    where: tuple[Condition, ...],
    order: Order,
    after: tuple[Any, ...] | None,
    param: Callable[[Any], str],
) -> str:
    """`` WHERE ...`` for the conditions and the keyset (empty when there are none)."""
    parts = []
    for column, op, value in where:
        if op == "eq":
            parts.append(_equal(column, value, param))
        elif op == "in":
            values = ", ".join(param(v) for v in value)
            parts.append(f"{column} IN ({values})" if value else "1 = 0")
        else:
            parts.append(f"{column} {_SQL_OPS[op]} {param(value)}")
    if after is not None:
        parts.append(_keyset_sql(order, after, param))
    return " WHERE " + " AND ".join(parts) if parts else ""


def order_sql(order: Order, nulls: bool) -> str:
    """`` ORDER BY ...`` (``nulls``: say NULLS FIRST / LAST, for databases whose default
    puts NULL last ascending)."""
    if not order:
        return ""
    first, last = (" NULLS FIRST", " NULLS LAST") if nulls else ("", "")
    return " ORDER BY " + ", ".join(
        f"{c} DESC{last}" if desc else f"{c} ASC{first}" for c, desc in order
    )


def _matches(row: dict[str, Any], where: tuple[Condition, ...]) -> bool:
    for column, op, value in where:
        x = row.get(column)
        if op == "eq":
            if x != value or (x is None) != (value is None):
                return False
        elif x is None:
            return False
        elif op == "in":
            if x not in value:
                return False
        elif not _PY_OPS[op](x, value):
            return False
    return True


def _after(row: dict[str, Any], order: Order, after: tuple[Any, ...]) -> bool:
    for (column, desc), value in zip(order, after, strict=True):
        x = row.get(column)
        if (x is None) == (value is None) and x == value:
            continue
        if x is None:  # NULL sorts first ascending, last descending
            return desc
        if value is None:
            return not desc
        return bool(x < value if desc else x > value)
    return False


def matches(
    rows: Iterable[dict[str, Any]],
    where: tuple[Condition, ...],
    order: Order,
    after: tuple[Any, ...] | None,
    table: str,
) -> list[dict[str, Any]]:
    """Copies of the rows that meet the conditions and come after the keyset (memory store)."""
    try:
        return [
            dict(r)
            for r in rows
            if _matches(r, where) and (after is None or _after(r, order, after))
        ]
    except TypeError as exc:
        raise ReadModelError(f"read-model query on {table!r} failed: {exc}") from exc


def _sort_key(value: Any) -> tuple[bool, Any]:
    return (value is not None, value)


def sort_rows(rows: list[dict[str, Any]], order: Order, table: str) -> list[dict[str, Any]]:
    """``rows`` sorted in place by ``order`` (NULL first ascending), as the databases do."""
    try:
        for column, desc in reversed(order):
            rows.sort(key=lambda r: _sort_key(r[column]), reverse=desc)
    except TypeError as exc:
        raise ReadModelError(f"read-model query on {table!r} failed: {exc}") from exc
    return rows


_write_sql: dict[tuple[str, str, tuple[str, ...], tuple[str, ...], str], str] = {}


def write_sql(w: TableWrite, table: str, mark: Callable[[int], str]) -> str:
    """The SQL of one validated read-model write to ``table`` (quoted as the adapter needs),
    with ``mark(i)`` the placeholder of the i-th bound value (from 1); cached."""
    key = (w.op, table, w.columns, w.key, mark(1))
    sql = _write_sql.get(key)
    if sql is not None:
        return sql
    cols = w.columns
    if w.op == "upsert":
        updates = [f"{c} = excluded.{c}" for c in cols if c not in w.key]
        action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
        marks = ", ".join(mark(i) for i in range(1, len(cols) + 1))
        sql = (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(w.key)}) {action}"
        )
    elif w.op == "delete":
        sql = f"DELETE FROM {table} WHERE " + " AND ".join(
            f"{c} = {mark(i)}" for i, c in enumerate(cols, 1)
        )
    elif w.op == "clear":
        sql = f"DELETE FROM {table}"
    elif w.op == "drop":
        sql = f"DROP TABLE IF EXISTS {table}"
    else:
        raise AssertionError(w.op)
    if len(_write_sql) > 4096:
        _write_sql.clear()
    _write_sql[key] = sql
    return sql
