"""Read-model tables on PostgreSQL: the writes a unit of work commits with its events, and reads.

Tables live in the store's schema. Identifiers were validated by the port (``check_table_write``,
``read_table``); values are always bound parameters. SQL types map as INTEGER -> bigint,
TEXT -> text, REAL -> double precision, BLOB -> bytea. Leases: ``chronik.store.postgres.leases``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import asyncpg

from chronik.errors import ReadModelError
from chronik.store.base import TableWrite
from chronik.store.postgres.errors import REFUSED_QUERY, refused_table_write
from chronik.store.table_query import order_sql, where_sql, write_sql
from chronik.store.tables import Condition

__all__ = ["read_table", "write_tables"]

_TYPES: Final = {
    "INTEGER": "bigint",
    "TEXT": 'text COLLATE "C"',  # byte order, as SQLite and memory sort
    "REAL": "double precision",
    "BLOB": "bytea",
}


def _statement(s: str, w: TableWrite) -> str:
    return write_sql(w, f"{s}.{w.table}", _dollar)


def _dollar(i: int) -> str:
    return f"${i}"


async def write_tables(conn: asyncpg.Connection, s: str, writes: Sequence[TableWrite]) -> None:
    """Run read-model writes in order inside the caller's transaction; runs of the same
    statement go through executemany. Raises ReadModelError when the database refuses a
    write (a missing table, a bad value)."""
    try:
        await _write_tables(conn, s, writes)
    except asyncpg.PostgresError as exc:
        if refused_table_write(exc):
            raise ReadModelError(f"read-model write refused: {exc}") from exc
        raise


async def _write_tables(conn: asyncpg.Connection, s: str, writes: Sequence[TableWrite]) -> None:
    i, n = 0, len(writes)
    while i < n:
        w = writes[i]
        if w.op == "ensure":
            spec = w.spec
            assert spec is not None
            cols = ", ".join(f"{c} {_TYPES[t]}" for c, t in spec.columns)
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.{w.table} ({cols}, "
                f"PRIMARY KEY ({', '.join(spec.primary_key)}))"
            )
            for index in spec.indexes:
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {w.table}__{'_'.join(index)} "
                    f"ON {s}.{w.table} ({', '.join(index)})"
                )
            i += 1
            continue
        sql = _statement(s, w)
        j = i + 1
        while j < n:
            x = writes[j]
            if x.op != w.op or x.table != w.table or x.columns != w.columns or x.key != w.key:
                break
            j += 1
        if j == i + 1:
            await conn.execute(sql, *w.row)
        else:
            await conn.executemany(sql, [x.row for x in writes[i:j]])
        i = j


async def read_table(
    fetch: Callable[..., Awaitable[list[Any]]],
    s: str,
    table: str,
    where: tuple[Condition, ...],
    order_by: tuple[tuple[str, bool], ...],
    limit: int | None,
    after: tuple[Any, ...] | None = None,
) -> list[dict[str, Any]]:
    """Committed rows of ``table`` meeting ``where`` after the keyset ``after``, as dicts."""
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    sql = f"SELECT * FROM {s}.{table}" + where_sql(where, order_by, after, param)
    sql += order_sql(order_by, nulls=True)
    if limit is not None:
        sql += f" LIMIT {param(limit)}"
    try:
        rows = await fetch(sql, *params)
    except REFUSED_QUERY as exc:
        raise ReadModelError(f"read-model query on {table!r} failed: {exc}") from exc
    return [dict(r) for r in rows]
