"""Read-model tables on Redis: ``read_table`` (the writes are part of the write script).

A table is one hash, ``{prefix}:t:{table}``, field ``{column}\\0{row key}`` -> cell
(``chronik.store.redis.codec``), beside its spec in ``{prefix}:tables``. A read takes the
spec, then the rows (only the matching row's fields when ``where`` names the whole primary
key): two round trips; then it filters and orders them with the reference rules of
``chronik.store.table_query``, so NULL ordering, keysets and byte order of text are the
memory store's. A read costs the size of the table: fine for chronik's own tables and small
read models; large read models belong in a database with indexes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio

from chronik.errors import ReadModelError
from chronik.store.records import TableSpec
from chronik.store.redis.codec import decode_cell, decode_spec, encode_cell, row_key
from chronik.store.redis.scripts import command
from chronik.store.table_query import matches, sort_rows
from chronik.store.tables import Condition

__all__ = ["read_table"]


def _key_cells(spec: TableSpec, where: tuple[Condition, ...]) -> list[bytes] | None:
    """The primary key's cells when ``where`` fixes every primary key column, else None."""
    fixed = {c: v for c, op, v in where if op == "eq"}
    if not all(c in fixed for c in spec.primary_key):
        return None
    return [encode_cell(fixed[c]) for c in spec.primary_key]


def _rows(spec: TableSpec, fields: dict[bytes, bytes]) -> list[dict[str, Any]]:
    by_row: dict[bytes, dict[str, Any]] = {}
    for field, cell in fields.items():
        column, _, key = field.partition(b"\x00")
        row = by_row.get(key)
        if row is None:
            row = by_row[key] = {c: None for c, _ in spec.columns}
        name = column.decode()
        if name in row:
            row[name] = decode_cell(cell)
    return list(by_row.values())


async def read_table(
    client: redis.asyncio.Redis,
    prefix: str,
    run: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]],
    table: str,
    where: tuple[Condition, ...],
    order_by: tuple[tuple[str, bool], ...],
    limit: int | None,
    after: tuple[Any, ...] | None,
) -> list[dict[str, Any]]:
    """Committed rows of ``table`` that meet ``where``, ordered and limited (``read_table``);
    ``run`` runs a driver call with the store's error translation."""
    rows_key = f"{prefix}:t:{table}"
    data = await run(lambda: command(client, "HGET", f"{prefix}:tables", table))
    if data is None:
        raise ReadModelError(f"no read-model table {table!r}", table=table)
    spec = decode_spec(table, data)
    names = {c for c, _ in spec.columns}
    for column in [c for c, _, _ in where] + [c for c, _ in order_by]:
        if column not in names:
            raise ReadModelError(f"table {table!r} has no column {column!r}", table=table)
    cells = _key_cells(spec, where)
    if cells is not None:
        key = row_key(cells)
        columns = [c for c, _ in spec.columns]
        fields = [c.encode() + b"\x00" + key for c in columns]
        values = await run(lambda: command(client, "HMGET", rows_key, *fields))
        found = {f: v for f, v in zip(fields, values, strict=True) if v is not None}
    else:
        found = await run(lambda: command(client, "HGETALL", rows_key))
    if isinstance(found, list):  # RESP2 pairs
        found = dict(zip(found[::2], found[1::2], strict=True))
    rows = _rows(spec, found)
    out = sort_rows(matches(rows, where, order_by, after, table), order_by, table)
    return out if limit is None else out[:limit]
