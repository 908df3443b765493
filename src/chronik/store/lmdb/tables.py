"""Read-model tables and leases on LMDB: specs in ``tables``, rows keyed by table and primary key.

A row is the msgpack array of its values in the spec's column order, under
``row_key(table, primary key)``; ``chronik_leases`` rows live in the ``leases`` sub-database,
``outbox_messages`` rows in ``outbox``, every other table's in ``rows``. The checks before a
unit writes (unknown tables and columns, leases held by another owner) and the lease rules are
the reference adapter's (``chronik.store.memory_tables``); ``read_table`` filters and orders
in Python with ``chronik.store.table_query``, as the memory store does (no secondary indexes:
a read costs the table's size).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lmdb

from chronik.errors import ReadModelError
from chronik.store.lmdb.keys import Dbs, Txn, decode, encode, name_key, row_key
from chronik.store.memory_tables import Rows, Tables, apply_lease, check_leases, check_tables
from chronik.store.records import LeaseOp, TableSpec, TableWrite
from chronik.store.system_tables import LEASES, OUTBOX, SYSTEM_TABLES
from chronik.store.table_query import matches, sort_rows
from chronik.store.tables import Condition

__all__ = ["ensure_system_tables", "read_table", "write_leases", "write_tables"]

_ROW_DBS = {LEASES.name: "leases", OUTBOX.name: "outbox"}


def _rows_db(dbs: Dbs, table: str) -> lmdb._Database:
    return dbs[_ROW_DBS.get(table, "rows")]


def _spec(txn: Txn, dbs: Dbs, table: str) -> TableSpec | None:
    raw = txn.get(table.encode(), db=dbs["tables"])
    if raw is None:
        return None
    columns, pk, indexes = decode(raw)
    return TableSpec(
        table,
        tuple((c, t) for c, t in columns),
        tuple(pk),
        tuple(tuple(i) for i in indexes),
    )


def _put_spec(txn: Txn, dbs: Dbs, spec: TableSpec) -> None:
    txn.put(
        spec.name.encode(), encode((spec.columns, spec.primary_key, spec.indexes)), db=dbs["tables"]
    )


def ensure_system_tables(txn: Txn, dbs: Dbs) -> None:
    """Create chronik's own tables that are missing (as the SQL adapters' migrations do)."""
    for spec in SYSTEM_TABLES:
        if _spec(txn, dbs, spec.name) is None:
            _put_spec(txn, dbs, spec)


def _keys_of(txn: Txn, db: lmdb._Database, prefix: bytes) -> Iterator[bytes]:
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix):
        return
    for key in cur.iternext(keys=True, values=False):
        if not key.startswith(prefix):
            return
        yield key


def _clear(txn: Txn, dbs: Dbs, table: str) -> None:
    db = _rows_db(dbs, table)
    for key in list(_keys_of(txn, db, name_key(table))):
        txn.delete(key, db=db)


def write_tables(txn: Txn, dbs: Dbs, writes: Sequence[TableWrite]) -> None:
    """Check, then run read-model writes in order (ReadModelError before any for an unknown
    table or column)."""
    specs: Tables = {}
    for w in writes:
        if w.table not in specs:
            spec = _spec(txn, dbs, w.table)
            if spec is not None:
                specs[w.table] = (spec, {})
    check_tables(specs, writes)
    for w in writes:
        if w.op == "ensure":
            assert w.spec is not None
            if _spec(txn, dbs, w.table) is None:
                _put_spec(txn, dbs, w.spec)
        elif w.op == "drop":
            _clear(txn, dbs, w.table)
            txn.delete(w.table.encode(), db=dbs["tables"])
        elif w.op == "clear":
            _clear(txn, dbs, w.table)
        else:
            _write_row(txn, dbs, w)


def _write_row(txn: Txn, dbs: Dbs, w: TableWrite) -> None:
    spec = _spec(txn, dbs, w.table)
    assert spec is not None  # checked by write_tables
    values = {
        c: bytes(v) if isinstance(v, bytearray | memoryview) else v
        for c, v in zip(w.columns, w.row, strict=True)
    }
    key = row_key(w.table, tuple(values.get(c) for c in spec.primary_key))
    db = _rows_db(dbs, w.table)
    if w.op == "delete":
        txn.delete(key, db=db)
        return
    old = txn.get(key, db=db)
    if old is None:
        row = [values.get(c) for c, _ in spec.columns]
    else:
        row = decode(old)
        for i, (c, _) in enumerate(spec.columns):
            if c in values:
                row[i] = values[c]
    txn.put(key, encode(row), db=db)


def write_leases(txn: Txn, dbs: Dbs, ops: Sequence[LeaseOp]) -> None:
    """Claim, renew or release leases (LeaseHeld, before any write, when another owner's lease
    is unexpired), by the rules of ``chronik.store.memory_tables``."""
    if not ops:
        return
    db = dbs["leases"]
    columns = [c for c, _ in LEASES.columns]
    rows: Rows = {}
    for op in ops:
        pk = (op.name, op.partition)
        raw = txn.get(row_key(LEASES.name, pk), db=db)
        if raw is not None and pk not in rows:
            rows[pk] = dict(zip(columns, decode(raw), strict=True))
    check_leases(rows, ops)
    for op in ops:
        apply_lease(rows, op)
    for pk, row in rows.items():
        txn.put(row_key(LEASES.name, pk), encode([row.get(c) for c in columns]), db=db)


def read_table(
    txn: Txn,
    dbs: Dbs,
    table: str,
    where: tuple[Condition, ...],
    order_by: tuple[tuple[str, bool], ...],
    limit: int | None,
    after: tuple[Any, ...] | None,
) -> list[dict[str, Any]]:
    """The rows of ``table`` that meet ``where`` and come after ``after``, in ``order_by``."""
    spec = _spec(txn, dbs, table)
    if spec is None:
        raise ReadModelError(f"no read-model table {table!r}")
    names = [c for c, _ in spec.columns]
    known = set(names)
    for column in [c for c, _, _ in where] + [c for c, _ in order_by]:
        if column not in known:
            raise ReadModelError(f"table {table!r} has no column {column!r}")
    cur = txn.cursor(db=_rows_db(dbs, table))
    prefix = name_key(table)
    rows: list[dict[str, Any]] = []
    if cur.set_range(prefix):
        for key, value in cur.iternext():
            if not key.startswith(prefix):
                break
            rows.append(dict(zip(names, decode(value), strict=True)))
    out = sort_rows(matches(rows, where, order_by, after, table), order_by, table)
    return out if limit is None else out[:limit]
