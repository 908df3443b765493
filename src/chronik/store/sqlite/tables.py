"""Read-model tables on SQLite: the TableWrite statements of a unit of work (leases: .leases)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from operator import attrgetter, itemgetter

from chronik.store.table_query import write_sql
from chronik.store.tables import TableWrite

__all__ = ["write_tables"]

_row = attrgetter("row")
_shape = itemgetter(0, 1, 2, 5)  # a TableWrite's op, table, columns, key: one statement


def _block_end(writes: Sequence[TableWrite]) -> int:
    """Where the writes like the first end, if they make one block up to the last write of
    its shape (a projection's page, then its bookkeeping): settled in C, in one pass over the
    writes and two over their shapes; else 1 (the caller goes on write by write)."""
    shapes = list(map(_shape, writes))
    first = shapes[0]
    end = len(shapes) - shapes[::-1].index(first)
    return end if end > 2 and shapes[:end].count(first) == end else 1


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
        j = _block_end(writes) if i == 0 else i + 1
        op, table, columns, key = w.op, w.table, w.columns, w.key
        while j < n:
            x = writes[j]
            # a projection's writes of one shape share their strings and column tuple: the
            # identity checks settle almost every row without comparing tuples
            same = x.columns is columns and x.table is table and x.op is op and x.key is key
            if not same and (
                x.columns != columns or x.table != table or x.op != op or x.key != key
            ):
                break
            j += 1
        if j == i + 1:
            conn.execute(sql, w.row)
        else:
            conn.executemany(sql, map(_row, writes[i:j]))
        i = j
