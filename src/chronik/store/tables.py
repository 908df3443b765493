"""Read-model tables as a unit of work writes and ``read_table`` reads them: the checks.

Adapters with ``supports_tables`` run ``TableWrite`` s in the same transaction as the unit's
appends; identifiers are validated here once, values are always bound parameters, and every
value is checked against the rule all adapters share (``check_values``). The records
(``TableSpec``, ``TableWrite``) live in ``chronik.store.records`` and chronik's own tables in
``chronik.store.system_tables``; both are re-exported here, their documented import path.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from math import isnan
from operator import itemgetter
from typing import Any, Final

from chronik.errors import ReadModelError, ValidationError
from chronik.store.records import TableSpec, TableWrite
from chronik.store.system_tables import (
    DEAD_LETTERS,
    INBOX,
    LEASES,
    LEASES_TABLE,
    OUTBOX,
    PLANS,
    REPLAY_MARKS,
    REQUESTS,
    SAGA_RECORD,
    STATUS,
    SYSTEM_TABLES,
)

__all__ = [
    "DEAD_LETTERS",
    "INBOX",
    "LEASES",
    "LEASES_TABLE",
    "MAX_IN_VALUES",
    "OUTBOX",
    "PLANS",
    "REPLAY_MARKS",
    "REQUESTS",
    "SAGA_RECORD",
    "SQL_TYPES",
    "STATUS",
    "SYSTEM_TABLES",
    "TABLE_OPS",
    "Condition",
    "In",
    "Range",
    "TableSpec",
    "TableWrite",
    "check_after",
    "check_all",
    "check_identifier",
    "check_table_write",
    "check_values",
    "check_where",
]

SQL_TYPES: Final = frozenset({"INTEGER", "TEXT", "REAL", "BLOB"})
#: The read-model ops adapters run.
TABLE_OPS: Final = frozenset({"ensure", "drop", "clear", "upsert", "delete"})
_IDENT_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_identifier(name: object, what: str = "table") -> str:
    """``name`` if it is a safe SQL identifier (``[a-z_][a-z0-9_]{0,62}``), else ValidationError."""
    if not isinstance(name, str) or not _IDENT_RE.fullmatch(name):
        raise ValidationError(
            f"invalid {what} name {name!r}: expected [a-z_][a-z0-9_]{{0,62}}", field=what
        )
    return name


_checked: set[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = set()


def check_table_write(w: TableWrite) -> TableWrite:
    """Validate every identifier of a read-model write (values are bound, never spliced)."""
    if not isinstance(w, TableWrite) or w.op not in TABLE_OPS:
        raise ValidationError(f"expected a TableWrite, got {w!r}", field="tables")
    signature = (w.op, w.table, w.columns, w.key)
    if signature in _checked:
        return w
    if type(w.columns) is not tuple or type(w.row) is not tuple or len(w.columns) != len(w.row):
        raise ValidationError(f"a write to {w.table!r} needs one value per column")
    check_identifier(w.table)
    for column in (*w.columns, *w.key):
        check_identifier(column, "column")
    if w.op == "ensure":
        spec = w.spec
        if spec is None or spec.name != w.table or not spec.columns or not spec.primary_key:
            raise ValidationError(f"ensure of {w.table} needs its TableSpec", field="tables")
        names = {check_identifier(c, "column") for c, _ in spec.columns}
        if any(t not in SQL_TYPES for _, t in spec.columns):
            raise ValidationError(f"column types of {w.table} must be in {sorted(SQL_TYPES)}")
        for cols in (spec.primary_key, *spec.indexes):
            if not cols or not set(cols) <= names:
                raise ValidationError(f"key or index {cols!r} names unknown columns of {w.table}")
        return w
    elif w.op == "upsert" and (not w.key or not set(w.key) <= set(w.columns)):
        raise ValidationError(f"an upsert into {w.table} needs every primary key column")
    elif w.op == "delete" and not w.columns:
        raise ValidationError(f"a delete from {w.table} needs the primary key")
    if len(_checked) > 4096:
        _checked.clear()
    _checked.add(signature)
    return w


INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def _value_problem(value: object) -> str | None:
    """Why no adapter can store ``value`` in a read-model column, or None if every one can.

    The rule all adapters share (so tests on memory are honest): None, bool, int within int64,
    float except NaN (SQLite would turn it into NULL), str that is valid UTF-8 without NUL
    (PostgreSQL text refuses NUL), bytes / bytearray / memoryview.
    """
    t = type(value)
    if t is str:
        s: str = value  # type: ignore[assignment]
        if not s.isascii():
            try:
                s.encode()
            except UnicodeEncodeError:
                return "a string that is not valid UTF-8 (a lone surrogate)"
        return "a string with a NUL character" if "\x00" in s else None
    if t is int:
        i: int = value  # type: ignore[assignment]
        return None if INT64_MIN <= i <= INT64_MAX else f"{i} is outside the int64 range"
    if t is float:
        return "NaN" if value != value else None
    if value is None or t is bool or t is bytes:
        return None
    if isinstance(value, bytearray | memoryview):
        return None
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        base = str if isinstance(value, str) else int if isinstance(value, int) else float
        return _value_problem(base(value))
    return f"a value of type {t.__name__}"


def check_values(w: TableWrite) -> TableWrite:
    """``w`` if every value of its row can be stored by every adapter, else ReadModelError
    naming the table and the column (checked before anything touches the database)."""
    for i, value in enumerate(w.row):
        t = type(value)
        if t is int:
            if INT64_MIN <= value <= INT64_MAX:
                continue
        elif t is str:
            if value.isascii() and "\x00" not in value:
                continue
        elif t is float:
            if value == value:
                continue
        elif value is None or t is bool or t is bytes:
            continue
        problem = _value_problem(value)
        if problem is not None:
            column = w.columns[i] if i < len(w.columns) else f"#{i}"
            raise ReadModelError(
                f"table {w.table!r}, column {column!r} cannot hold {problem}",
                table=w.table,
                column=column,
            )
    return w


_PLAIN: Final = frozenset({str, int, float, bool, bytes, type(None)})
_row = itemgetter(3)  # TableWrite.row, by index (cheaper than by name)
_is_str = str.__instancecheck__
_is_int = int.__instancecheck__
_is_float = float.__instancecheck__


def check_all(writes: Iterable[TableWrite]) -> list[TableWrite]:
    """``check_values`` of a batch of writes at once (a projection's page): the values of all
    rows, one list, are checked in slices of the first row's width (the columns, when the rows
    are alike; every value lies in one slice whatever the widths) kind by kind in C (a slice of
    strings in one join, its ints as an int64 array, isnan of its floats); if any value is in
    doubt, ``check_values`` runs write by write (and names the table and column). No
    GC-tracked object is made per row: it would make the garbage collector run more often."""
    out = writes if type(writes) is list else list(writes)
    if not out:
        return out
    values = list(chain.from_iterable(map(_row, out)))
    width = len(out[0].row) or 1
    for k in range(width):
        if not _column_ok(values[k::width]):
            return [check_values(w) for w in out]
    return out


def _column_ok(column: Sequence[Any]) -> bool:
    """Whether every value of one column can be stored by every adapter (a column of strings,
    the usual key, is checked in one join: it raises TypeError at the first value that is not
    a str)."""
    try:
        s = "".join(column)
    except TypeError:
        kinds = set(map(type, column))
        return kinds <= _PLAIN and _plain_values_ok(column, kinds)
    return "\x00" not in s and (s.isascii() or _utf8(s))


def _utf8(s: str) -> bool:
    """Whether ``s`` encodes to UTF-8 (no lone surrogate)."""
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def _plain_values_ok(values: Sequence[Any], kinds: set[type]) -> bool:
    """Whether every value (of the exact types in ``_PLAIN``) can be stored by every adapter."""
    alone = len(kinds) == 1
    if str in kinds:
        s = "".join(values if alone else filter(_is_str, values))
        if "\x00" in s or not (s.isascii() or _utf8(s)):
            return False
    if int in kinds:
        try:  # int64 cells: OverflowError past the range (the bools are 0 and 1)
            array("q", values if alone else filter(_is_int, values))
        except OverflowError:
            return False
    return float not in kinds or not any(map(isnan, filter(_is_float, values)))


# --- conditions of read_table -------------------------------------------------------------------

MAX_IN_VALUES: Final = 1000
#: A checked condition as adapters receive it: (column, op, value). ``op`` is ``eq`` (the value
#: may be None: IS NULL), ``gt`` / ``ge`` / ``lt`` / ``le`` (never None) or ``in`` (a tuple of
#: values, none of them None).
Condition = tuple[str, str, Any]


@dataclass(frozen=True, slots=True)
class Range:
    """A ``read_table`` condition: the column lies within the given bounds (> ``gt``, >= ``ge``,
    < ``lt``, <= ``le``; each optional, at least one). NULL never matches a Range."""

    gt: Any = None
    ge: Any = None
    lt: Any = None
    le: Any = None


@dataclass(frozen=True, slots=True, init=False)
class In:
    """A ``read_table`` condition: the column equals one of ``values`` (at most MAX_IN_VALUES,
    none of them None; an empty In matches nothing)."""

    values: tuple[Any, ...]

    def __init__(self, values: Iterable[Any]) -> None:
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            raise ValidationError(f"In needs a collection of values, got {values!r}")
        object.__setattr__(self, "values", tuple(values))


def _condition_value(column: str, value: object) -> Any:
    problem = None if value is None else _value_problem(value)
    if problem is not None:
        raise ValidationError(f"column {column!r} cannot hold {problem}", field=column)
    return value


def check_where(where: Mapping[str, Any] | None) -> tuple[Condition, ...]:
    """The checked conditions of a ``read_table`` ``where`` (column -> value, Range or In).

    A plain value means equality (None: IS NULL). Raises ValidationError naming the column for
    a bad column name, a value no adapter can store, an empty Range or an oversized In.
    """
    if where is not None and not isinstance(where, Mapping):
        raise ValidationError(f"where must be a mapping, got {where!r}", field="where")
    out: list[Condition] = []
    for column, cond in (where or {}).items():
        check_identifier(column, "column")
        if isinstance(cond, Range):
            bounds = [
                (op, v)
                for op, v in (("gt", cond.gt), ("ge", cond.ge), ("lt", cond.lt), ("le", cond.le))
                if v is not None
            ]
            if not bounds:
                raise ValidationError(f"the Range on {column!r} has no bound", field=column)
            out += [(column, op, _condition_value(column, v)) for op, v in bounds]
        elif isinstance(cond, In):
            if len(cond.values) > MAX_IN_VALUES:
                raise ValidationError(
                    f"In on {column!r} has more than {MAX_IN_VALUES} values", field=column
                )
            if any(v is None for v in cond.values):
                raise ValidationError(f"In on {column!r} cannot hold None", field=column)
            out.append((column, "in", tuple(_condition_value(column, v) for v in cond.values)))
        else:
            out.append((column, "eq", _condition_value(column, cond)))
    return tuple(out)


def check_after(
    order_by: tuple[tuple[str, bool], ...], after: Mapping[str, Any] | None
) -> tuple[Any, ...] | None:
    """The keyset of a ``read_table`` ``after`` (one value per ``order_by`` column, in that
    order), or None; ValidationError naming ``after`` if it does not fit ``order_by``."""
    if after is None:
        return None
    columns = [c for c, _ in order_by]
    if not columns or not isinstance(after, Mapping) or set(after) != set(columns):
        raise ValidationError(
            f"after must give a value for each order_by column {columns}", field="after"
        )
    return tuple(_condition_value(c, after[c]) for c in columns)
