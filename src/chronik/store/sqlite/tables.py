"""Read-model tables on SQLite: the TableWrite statements of a unit of work (leases: .leases)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from chronik.store.tables import TableWrite

__all__ = ["write_tables"]

_table_sql: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], str] = {}


def _table_statement(w: TableWrite) -> str:
    """The SQL of one validated read-model write (identifiers checked; values bound)."""
    columns = w.columns
    cache_key = (w.op, w.table, columns, w.key)
    sql = _table_sql.get(cache_key)
    if sql is not None:
        return sql
    t = w.table
    if w.op == "upsert":
        updates = [f"{c} = excluded.{c}" for c in columns if c not in w.key]
        action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
        sql = (
            f"INSERT INTO {t} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({', '.join(w.key)}) {action}"
        )
    elif w.op == "delete":
        sql = f"DELETE FROM {t} WHERE {' AND '.join(f'{c} = ?' for c in columns)}"
    elif w.op == "clear":
        sql = f"DELETE FROM {t}"
    elif w.op == "drop":
        sql = f"DROP TABLE IF EXISTS {t}"
    else:
        raise AssertionError(w.op)
    if len(_table_sql) > 4096:
        _table_sql.clear()
    _table_sql[cache_key] = sql
    return sql


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
