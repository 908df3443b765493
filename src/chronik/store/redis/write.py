"""A unit of work as the write script's arguments, and the script's answer as results or the
typed error the unit fails with (as every other adapter raises it).

Plain functions: ``unit_args`` encodes a ``WriteUnit`` (``chronik.store.redis.lua_write``
documents the layout), ``outcome`` reads the reply. An append whose event ids are stored
already comes back as ``Retry`` naming it: the store finds its original result
(``match_duplicate``) and calls the script again with that append skipped.
"""

from __future__ import annotations

from typing import Any, Final

from chronik.dcb import Query
from chronik.errors import (
    AppendConditionFailed,
    CheckpointFenced,
    LeaseHeld,
    ReadModelError,
    WrongExpectedVersion,
)
from chronik.messages import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Expected,
    Position,
)
from chronik.store.records import TableWrite, WriteUnit
from chronik.store.redis.codec import (
    encode_body,
    encode_cell,
    encode_snapshot,
    encode_spec,
    stream_key,
)

__all__ = ["Retry", "after_bound", "before_bound", "outcome", "query_args", "unit_args"]

_KINDS: Final = {ANY: "any", NO_STREAM: "no", STREAM_EXISTS: "exists"}


class Retry(Exception):
    """The append at ``index`` of the unit is stored already (its event ids are)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def after_bound(after: Position | None) -> str:
    """The exclusive lower bound of positions after ``after`` ('' for none)."""
    return "" if after is None else str(after.commit)


def before_bound(before: Position | None) -> str:
    """The exclusive upper bound of positions before ``before`` ('' for none)."""
    if before is None:
        return ""
    return str(before.commit + 1 if before.index else before.commit)


def _expected(expected: Expected) -> tuple[str, int]:
    if isinstance(expected, int):
        return "v", expected
    return _KINDS[expected], -1


def query_args(query: Query) -> list[Any]:
    """A query's items: their count, then each item's types and tags (counted lists)."""
    args: list[Any] = [len(query.items)]
    for item in query.items:
        args += [len(item.types), *item.types, len(item.tags), *item.tags]
    return args


def _table_args(w: TableWrite) -> list[Any]:
    if w.op == "ensure":
        spec = w.spec
        assert spec is not None
        cols = " " + " ".join(c for c, _ in spec.columns) + " "
        return [w.op, w.table, cols, " ".join(spec.primary_key), encode_spec(spec)]
    if w.op in ("upsert", "delete"):
        args: list[Any] = [w.op, w.table, len(w.columns)]
        for column, value in zip(w.columns, w.row, strict=True):
            args += [column, encode_cell(value)]
        return args
    return [w.op, w.table]


def unit_args(prefix: str, token: str, unit: WriteUnit, skip: set[int]) -> list[Any]:
    """The write script's arguments for ``unit``; appends in ``skip`` are left out."""
    args: list[Any] = [prefix, token, len(unit.expects)]
    for check in unit.expects:
        kind, version = _expected(check.expected)
        args += [stream_key(check.stream), kind, version, len(check.event_ids), *check.event_ids]
    args.append(len(unit.conditions))
    for cond in unit.conditions:
        args += [len(cond.event_ids), *cond.event_ids, after_bound(cond.after)]
        args += query_args(cond.query)
    args.append(len(unit.checkpoints))
    for cp in unit.checkpoints:
        pos = cp.position
        args += [f"{cp.partition} {cp.name}", cp.epoch, f"{pos.commit} {pos.index} {cp.epoch}"]
    args.append(len(unit.snapshots))
    for snap in unit.snapshots:
        args += [stream_key(snap.stream), snap.sequence, encode_snapshot(snap)]
    args.append(len(unit.tables))
    for w in unit.tables:
        args += _table_args(w)
    args.append(len(unit.leases))
    for op in unit.leases:
        args += [op.op, op.name, op.partition, op.owner, op.ttl_us, op.version]
    args.append(len(unit.appends))
    for i, req in enumerate(unit.appends):
        kind, version = _expected(req.expected)
        stream = req.stream
        args += [stream_key(stream), stream.domain, kind, version, int(i in skip), len(req.events)]
        for e in req.events:
            args += [e.event_id, e.type, len(e.tags), *e.tags, encode_body(stream, e)]
    return args


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def outcome(
    unit: WriteUnit, reply: list[Any], resolved: dict[int, AppendResult]
) -> list[AppendResult]:
    """The unit's results from a successful reply; raises what a failed check says."""
    kind = _text(reply[0])
    if kind == "ok":
        now = int(reply[1])
        results = []
        for i, req in enumerate(unit.appends):
            if i in resolved:
                results.append(resolved[i])
                continue
            first_seq, first_pos = int(reply[2 + 2 * i]), int(reply[3 + 2 * i])
            n = len(req.events)
            positions = tuple(Position(first_pos + k) for k in range(n))
            results.append(
                AppendResult(
                    req.stream, first_seq, first_seq + n - 1, positions[-1], positions, now
                )
            )
        return results
    index = int(reply[1]) - 1
    if kind == "dup":
        raise Retry(index)
    if kind == "fenced":
        cp = unit.checkpoints[index]
        raise CheckpointFenced(cp.name, cp.partition, cp.epoch, int(reply[2]))
    if kind in ("expect", "append"):
        check = unit.expects[index] if kind == "expect" else unit.appends[index]
        actual = int(reply[2])
        raise WrongExpectedVersion(check.stream, check.expected, None if actual < 0 else actual)
    if kind == "condition":
        cond = unit.conditions[index]
        raise AppendConditionFailed(int(reply[2]) - 1, Position(int(reply[3])), str(cond.query))
    if kind == "lease":
        op = unit.leases[index]
        raise LeaseHeld(op.name, op.partition, op.owner)
    if kind == "table":
        table = unit.tables[index].table
        if _text(reply[2]) == "missing":
            raise ReadModelError(f"no read-model table {table!r}", table=table)
        unknown = sorted(_text(c) for c in reply[3:])
        raise ReadModelError(
            f"table {table!r} has no column(s) {unknown}", table=table, column=unknown[0]
        )
    raise AssertionError(f"unexpected reply of the write script: {reply!r}")
