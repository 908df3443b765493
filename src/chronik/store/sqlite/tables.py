"""Read-model tables on SQLite: the TableWrite statements of a unit of work (leases: .leases)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from chronik.store.table_query import write_sql
from chronik.store.tables import TableWrite

__all__ = ["write_tables"]


def _table_statement(w: TableWrite) -> str:
    """The SQL of one validated read-model write (identifiers checked; values bound)."""
    return write_sql(w, w.table, _qmark)


def _qmark(_: int) -> str:
    return "?"


def write_tables(conn: sqlite3.Connection, writes: Sequence[TableWrite]) -> None:
    """Run read-model writes in order; runs of the same statement go through executemany."""
    i, n = 0, len(writes)
    while i < n:
        w = writes[i]
        if w.op == "ensure":
            spec = w.spec
            assert spec is not None
            cols = ", ".join(f"{c} {t}" for c, t in spec.columns)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {w.table} ({cols}, "
                f"PRIMARY KEY ({', '.join(spec.primary_key)}))"
            )
            for index in spec.indexes:
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {w.table}__{'_'.join(index)} "
                    f"ON {w.table} ({', '.join(index)})"
                )
            i += 1
            continue
        sql = _table_statement(w)
        j = i + 1
        op, table, columns, key = w.op, w.table, w.columns, w.key
        while j < n:
            x = writes[j]
            if x.table != table or x.columns != columns or x.op != op or x.key != key:
                break
            j += 1
        if j == i + 1:
            conn.execute(sql, w.row)
        else:
            conn.executemany(sql, [x.row for x in writes[i:j]])
        i = j
