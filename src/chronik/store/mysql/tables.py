"""Read-model tables and leases on MySQL: the writes a unit of work commits with its events, and
reads.

Tables live in the store's database. Identifiers were validated by the port (``[a-z_][a-z0-9_]*``)
and are backquoted here (``partition`` is a reserved word in MySQL); values are always bound.
SQL types map as INTEGER -> BIGINT, REAL -> DOUBLE, BLOB -> LONGBLOB, TEXT -> LONGTEXT; a TEXT
or BLOB column of the primary key or of an index is VARCHAR(256) / VARBINARY(1024) instead
(InnoDB indexes at most 3072 bytes: at most three such columns per key). Text compares and
sorts by code point (the database's binary no-pad collation); NULL sorts first ascending.
A refused statement (a missing table or column, a value that does not fit) is a ReadModelError.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any, Final

import asyncmy

from chronik.errors import LeaseHeld
from chronik.store.mysql.errors import DUPLICATE_KEY, code, refused, table_error
from chronik.store.mysql.pool import run
from chronik.store.records import LeaseOp, TableSpec, TableWrite
from chronik.store.table_query import order_sql, where_sql
from chronik.store.tables import Condition

__all__ = ["NOW_US", "column_type", "read_table", "table_ddl", "write_leases", "write_tables"]

#: The database clock in microseconds since the epoch (leases).
NOW_US: Final = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)"
_TYPES: Final = {"INTEGER": "BIGINT", "REAL": "DOUBLE", "BLOB": "LONGBLOB", "TEXT": "LONGTEXT"}
_KEY_TYPES: Final = {
    "INTEGER": "BIGINT",
    "REAL": "DOUBLE",
    "BLOB": "VARBINARY(1024)",
    "TEXT": "VARCHAR(256)",
}


#: MySQL's DOUBLE has no infinities: +-inf are stored as the largest finite doubles and read
#: back as +-inf (a REAL column of exactly +-DBL_MAX reads as +-inf; the order is kept).
_DBL_MAX: Final = sys.float_info.max
_DOUBLE_TYPES: Final = frozenset({4, 5})  # FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE


def bind(value: Any) -> Any:
    """A value as MySQL stores it (+-inf as +-DBL_MAX)."""
    if type(value) is float and math.isinf(value):
        return math.copysign(_DBL_MAX, value)
    return value


def _unbind(value: Any) -> Any:
    if type(value) is float and abs(value) == _DBL_MAX:
        return math.copysign(math.inf, value)
    return value


def q(name: str) -> str:
    """A validated identifier, backquoted."""
    return f"`{name}`"


def column_type(spec: TableSpec, column: str, sql_type: str) -> str:
    """The MySQL type of a column of ``spec`` (key and index columns get indexable types)."""
    keyed = column in spec.primary_key or any(column in i for i in spec.indexes)
    return (_KEY_TYPES if keyed else _TYPES)[sql_type]


def table_ddl(spec: TableSpec) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for ``spec``, its indexes inline."""
    cols = [
        f"{q(c)} {column_type(spec, c, t)}{' NOT NULL' if c in spec.primary_key else ''}"
        for c, t in spec.columns
    ]
    cols.append(f"PRIMARY KEY ({', '.join(q(c) for c in spec.primary_key)})")
    cols += [
        f"KEY {spec.name}__{'_'.join(index)} ({', '.join(q(c) for c in index)})"
        for index in spec.indexes
    ]
    return f"CREATE TABLE IF NOT EXISTS {q(spec.name)} ({', '.join(cols)}) ENGINE=InnoDB"


def _write_sql(w: TableWrite) -> str:
    table = q(w.table)
    cols = w.columns
    if w.op == "upsert":
        updates = [f"{q(c)} = VALUES({q(c)})" for c in cols if c not in w.key]
        if not updates:  # nothing to update: keep the row (a no-op assignment)
            updates = [f"{q(w.key[0])} = {q(w.key[0])}"]
        marks = ", ".join(["%s"] * len(cols))
        return (
            f"INSERT INTO {table} ({', '.join(q(c) for c in cols)}) VALUES ({marks}) "
            f"ON DUPLICATE KEY UPDATE {', '.join(updates)}"
        )
    if w.op == "delete":
        return f"DELETE FROM {table} WHERE " + " AND ".join(f"{q(c)} <=> %s" for c in cols)
    if w.op == "clear":
        return f"DELETE FROM {table}"
    if w.op == "drop":
        return f"DROP TABLE IF EXISTS {table}"
    raise AssertionError(w.op)


async def write_tables(conn: asyncmy.Connection, writes: Sequence[TableWrite]) -> None:
    """Run read-model writes in order inside the caller's transaction; runs of the same upsert
    go in one multi-row statement. ReadModelError when the database refuses a write.

    ``ensure`` and ``drop`` are DDL: MySQL commits the transaction before and after a DDL
    statement, so a unit that creates or drops a table is not atomic with it (projections
    ensure their tables in a unit of their own before they write rows).
    """
    i, n = 0, len(writes)
    while i < n:
        w = writes[i]
        try:
            if w.op == "ensure":
                assert w.spec is not None
                await run(conn, table_ddl(w.spec))
                i += 1
                continue
            j = i + 1
            if w.op == "upsert":
                while j < n and j - i < 500:
                    x = writes[j]
                    if x.op != "upsert" or x.table != w.table or x.columns != w.columns:
                        break
                    j += 1
            sql = _write_sql(w)
            if j > i + 1:  # several rows: one INSERT ... VALUES (...), (...)
                head, _, tail = sql.partition(" ON DUPLICATE KEY UPDATE ")
                marks = head[head.rindex(" VALUES (") + 8 :]
                head = head[: head.rindex(" VALUES (")]
                sql = f"{head} VALUES {', '.join([marks] * (j - i))} ON DUPLICATE KEY UPDATE {tail}"
                await run(conn, sql, [bind(v) for x in writes[i:j] for v in x.row])
            else:
                await run(conn, sql, [bind(v) for v in w.row])
            i = j
        except asyncmy.errors.MySQLError as exc:
            if refused(exc):
                raise table_error(exc, w.table) from exc
            raise


async def read_table(
    conn: asyncmy.Connection,
    table: str,
    where: tuple[Condition, ...],
    order_by: tuple[tuple[str, bool], ...],
    limit: int | None,
    after: tuple[Any, ...] | None,
) -> list[dict[str, Any]]:
    """Committed rows of ``table`` meeting ``where`` after the keyset ``after``, as dicts."""
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(bind(value))
        return "%s"

    quoted_where = tuple((q(c), op, v) for c, op, v in where)
    quoted_order = tuple((q(c), desc) for c, desc in order_by)
    sql = f"SELECT * FROM {q(table)}" + where_sql(quoted_where, quoted_order, after, param)
    sql += order_sql(quoted_order, nulls=False)  # MySQL sorts NULL first ascending already
    if limit is not None:
        sql += f" LIMIT {param(limit)}"
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, params)
            rows = await cur.fetchall()
            names = [d[0] for d in cur.description]
            doubles = [i for i, d in enumerate(cur.description) if d[1] in _DOUBLE_TYPES]
    except asyncmy.errors.MySQLError as exc:
        if refused(exc):
            raise table_error(exc, table) from exc
        raise
    out = [dict(zip(names, r, strict=True)) for r in rows]
    for i in doubles:
        name = names[i]
        for row in out:
            row[name] = _unbind(row[name])
    return out


_LEASE_ROW: Final = (
    f"SELECT owner, epoch, expires_at, {NOW_US} FROM chronik_leases "
    "WHERE `name` = %s AND `partition` = %s FOR UPDATE"
)
_LEASE_INSERT: Final = (
    "INSERT INTO chronik_leases (`name`, `partition`, owner, epoch, expires_at, version) "
    f"VALUES (%s, %s, %s, 1, {NOW_US} + %s, %s)"
)
_LEASE_UPDATE: Final = (
    "UPDATE chronik_leases SET owner = %s, epoch = %s, expires_at = %s, version = %s "
    "WHERE `name` = %s AND `partition` = %s"
)
_LEASE_RELEASE: Final = (
    "UPDATE chronik_leases SET expires_at = 0 WHERE `name` = %s AND `partition` = %s AND owner = %s"
)


async def write_leases(conn: asyncmy.Connection, ops: Sequence[LeaseOp]) -> None:
    """Claim, renew or release leases in the caller's transaction, by the database clock;
    LeaseHeld (the unit fails) when another owner's lease is unexpired. A lease row is read
    with FOR UPDATE, so two claimants of one lease serialise; of two claimants of a lease that
    does not exist yet, the second waits on the first's new row, then decides on it."""
    for op in ops:
        if op.op == "release":
            await run(conn, _LEASE_RELEASE, (op.name, op.partition, op.owner))
            continue
        rows = (await run(conn, _LEASE_ROW, (op.name, op.partition)))[0].rows
        if not rows:
            try:
                await run(
                    conn, _LEASE_INSERT, (op.name, op.partition, op.owner, op.ttl_us, op.version)
                )
                continue
            except asyncmy.errors.IntegrityError as exc:
                if code(exc) != DUPLICATE_KEY:
                    raise
            # another claimant created it meanwhile (we waited for its commit): decide on it
            rows = (await run(conn, _LEASE_ROW, (op.name, op.partition)))[0].rows or []
        owner, epoch, expires_at, now = rows[0]
        if owner != op.owner and expires_at >= now:
            raise LeaseHeld(op.name, op.partition, op.owner)
        epoch = epoch if owner == op.owner else epoch + 1
        await run(
            conn,
            _LEASE_UPDATE,
            (op.owner, epoch, now + op.ttl_us, op.version, op.name, op.partition),
        )
