"""The memory adapter's read-model tables and leases: checked before a unit applies, then
applied (``chronik.store.memory``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from chronik.errors import LeaseHeld, ReadModelError
from chronik.store.records import LeaseOp, TableSpec, TableWrite

__all__ = ["Rows", "Tables", "apply_lease", "apply_table_write", "check_leases", "check_tables"]

Rows = dict[tuple[Any, ...], dict[str, Any]]
Tables = dict[str, tuple[TableSpec, Rows]]


def check_tables(
    tables: Tables,
    writes: Sequence[TableWrite],
) -> None:
    """Raise ReadModelError before anything is applied if a write would fail."""
    columns = {name: {c for c, _ in spec.columns} for name, (spec, _) in tables.items()}
    for w in writes:
        if w.op == "ensure":
            assert w.spec is not None
            columns.setdefault(w.table, {c for c, _ in w.spec.columns})
        elif w.op == "drop":
            columns.pop(w.table, None)
        elif w.table not in columns:
            raise ReadModelError(f"no read-model table {w.table!r}")
        else:
            unknown = set(w.columns) - columns[w.table]
            if unknown:
                raise ReadModelError(f"table {w.table!r} has no column(s) {sorted(unknown)}")


def apply_table_write(tables: Tables, w: TableWrite) -> None:
    if w.op == "ensure":
        assert w.spec is not None
        tables.setdefault(w.table, (w.spec, {}))
        return
    if w.op == "drop":
        tables.pop(w.table, None)
        return
    spec, rows = tables[w.table]
    if w.op == "clear":
        rows.clear()
        return
    values = {
        c: bytes(v) if isinstance(v, bytearray | memoryview) else v
        for c, v in zip(w.columns, w.row, strict=True)
    }
    key = tuple(values.get(c) for c in spec.primary_key)
    if w.op == "delete":
        rows.pop(key, None)
        return
    row = rows.get(key)
    if row is None:
        rows[key] = {c: values.get(c) for c, _ in spec.columns}
    else:
        row.update(values)


def check_leases(rows: Rows, ops: Sequence[LeaseOp]) -> None:
    """LeaseHeld before anything is applied if another owner holds a lease the unit claims."""
    now = time.time_ns() // 1000
    for op in ops:
        held = rows.get((op.name, op.partition))
        if (
            op.op == "acquire"
            and held is not None
            and held["owner"] != op.owner
            and held["expires_at"] >= now
        ):
            raise LeaseHeld(op.name, op.partition, op.owner)


def apply_lease(rows: Rows, op: LeaseOp) -> None:
    """Claim, renew or release one lease (checked by ``_check_leases``)."""
    held = rows.get((op.name, op.partition))
    if op.op == "release":
        if held is not None and held["owner"] == op.owner:
            held["expires_at"] = 0
        return
    epoch = 1 if held is None else held["epoch"] + (held["owner"] != op.owner)
    rows[(op.name, op.partition)] = {
        "name": op.name,
        "partition": op.partition,
        "owner": op.owner,
        "epoch": epoch,
        "expires_at": time.time_ns() // 1000 + op.ttl_us,
        "version": op.version,
    }
