"""The read-model helper: declared tables, and writes staged into a projection's transaction.

A projection declares its tables (name, columns, primary key). Handlers receive a ``ReadModel``
and call ``upsert`` / ``delete`` (staged, committed with the checkpoint in one unit of work) and
``get`` / ``query`` (the committed rows with this batch's staged writes laid over them). Table
and column names are validated identifiers; values are always bound parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from chronik.errors import ValidationError
from chronik.messages import RecordedEvent
from chronik.store.base import EventStore, TableSpec, TableWrite, check_identifier

__all__ = ["TENANT", "ReadModel", "Table", "physical_name"]

#: The column a ``per_tenant`` table keys its rows by (first in its primary key).
TENANT: Final = "tenant"

_SQL_TYPES: Final[dict[object, str]] = {
    int: "INTEGER",
    bool: "INTEGER",
    str: "TEXT",
    float: "REAL",
    bytes: "BLOB",
    "integer": "INTEGER",
    "text": "TEXT",
    "real": "REAL",
    "blob": "BLOB",
}
MAX_TABLE_NAME: Final = 48


def physical_name(table: str, generation: int) -> str:
    """The name of a table's generation in the database (``receipts`` gen 2: ``receipts__g2``)."""
    return f"{table}__g{generation}"


class Table:
    """A read-model table: ``Table("receipts", {"id": str, "amount": int}, primary_key="id")``.

    Column types are ``int``, ``str``, ``float``, ``bytes``, ``bool`` (or their SQL names).
    Every generation of a projection gets its own physical table (see ``physical_name``).
    ``per_tenant=True`` adds a TEXT column ``tenant`` as the first column of the primary key
    (and of each index): a handler's writes and reads are then scoped to the tenant of the
    event it handles, with no change to its code.
    """

    def __init__(
        self,
        name: str,
        columns: Mapping[str, object],
        primary_key: str | Sequence[str],
        indexes: Iterable[Sequence[str]] = (),
        *,
        per_tenant: bool = False,
    ) -> None:
        check_identifier(name)
        if len(name) > MAX_TABLE_NAME or name.startswith("chronik_"):
            raise ValidationError(
                f"invalid table name {name!r}: at most {MAX_TABLE_NAME} characters, "
                "and the chronik_ prefix is reserved",
                field="table",
            )
        if not columns:
            raise ValidationError(f"table {name!r} needs columns", field="columns")
        if per_tenant:
            if TENANT in columns:
                raise ValidationError(
                    f"table {name!r} is per tenant: chronik adds its {TENANT!r} column",
                    field="columns",
                )
            columns = {TENANT: str, **columns}
        cols: list[tuple[str, str]] = []
        for column, kind in columns.items():
            check_identifier(column, "column")
            sql = _SQL_TYPES.get(kind.lower() if isinstance(kind, str) else kind)
            if sql is None:
                raise ValidationError(
                    f"column {name}.{column} has type {kind!r}: use int, str, float, bytes or bool",
                    field="columns",
                )
            cols.append((column, sql))
        pk = (primary_key,) if isinstance(primary_key, str) else tuple(primary_key)
        index_list = tuple(tuple(i) for i in indexes)
        if per_tenant:
            pk = (TENANT, *pk)
            index_list = tuple((TENANT, *i) for i in index_list)
        for key in (pk, *index_list):
            if not key or not set(key) <= set(columns):
                raise ValidationError(
                    f"key {key!r} of table {name!r} names unknown columns", field="primary_key"
                )
        self.name = name
        self.per_tenant = per_tenant
        # column tuple of an upsert -> (positions of the primary key in it, whether it is full)
        self.shapes: dict[tuple[str, ...], tuple[tuple[int, ...], bool]] = {}
        # a checked column tuple -> its first copy: the writes of a shape share one tuple (no
        # new tuple kept per row, and runs of equal writes compare by identity)
        self.checked: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.columns: tuple[tuple[str, str], ...] = tuple(cols)
        self.column_names = frozenset(columns)
        self.primary_key = pk
        self.indexes = index_list

    def shape(self, columns: tuple[str, ...]) -> tuple[tuple[int, ...], bool]:
        """Check the columns of an upsert once; where the primary key sits in them."""
        unknown = set(columns) - self.column_names
        if unknown:
            raise ValidationError(f"table {self.name!r} has no column(s) {sorted(unknown)}")
        if not set(self.primary_key) <= set(columns):
            raise ValidationError(
                f"an upsert into {self.name!r} needs its primary key {self.primary_key}"
            )
        shape = (
            tuple(columns.index(c) for c in self.primary_key),
            len(set(columns)) == len(self.columns),
        )
        if len(self.shapes) < 256:
            self.shapes[columns] = shape
            self.checked[columns] = columns
        return shape

    def spec(self, generation: int) -> TableSpec:
        """The TableSpec of one generation of this table."""
        return TableSpec(
            physical_name(self.name, generation), self.columns, self.primary_key, self.indexes
        )

    def __repr__(self) -> str:
        return f"<Table {self.name} pk={','.join(self.primary_key)}>"


_new = tuple.__new__
_Key = tuple[str, tuple[Any, ...]]
# an overlay entry: ("row", full row) | ("patch", columns to lay over the stored row) | ("gone", {})
_Entry = tuple[str, dict[str, Any]]


class ReadModel:
    """What a handler writes through: one batch of a projection's staged table writes.

    ``event`` is the event being handled; its ``event_id`` is the idempotency key for effects
    outside the database. Reads see the committed rows with the batch's writes laid over them
    (folded lazily, so handlers that only write pay nothing for it). Rows of ``per_tenant``
    tables belong to ``tenant`` when given, else to the tenant of the event being handled.
    """

    def __init__(
        self,
        store: EventStore,
        tables: Mapping[str, Table],
        generation: int,
        tenant: str | None = None,
    ) -> None:
        self._store = store
        self.tenant = tenant
        self._tables = tables
        self._physical = {name: physical_name(name, generation) for name in tables}
        self._logical = {v: tables[k] for k, v in self._physical.items()}
        self._targets: dict[str, tuple[Table, str, tuple[str, ...]]] = {}
        self.generation = generation
        self.writes: list[TableWrite] = []
        self.mark = 0  # writes before this index belong to events that succeeded (begin)
        self._overlay: dict[_Key, _Entry] = {}
        self._folded = 0  # writes folded into the overlay
        self.event: RecordedEvent | None = None

    # --- staging per event (a failed handler leaves nothing behind) ---------------------------

    def begin(self, event: RecordedEvent) -> None:
        """Start staging the writes of one event."""
        self.event = event
        self.mark = len(self.writes)

    def keep(self) -> None:
        """The handler succeeded: its writes stay in the batch."""
        self.mark = len(self.writes)

    def discard(self) -> None:
        """The handler failed: forget its writes."""
        if len(self.writes) > self.mark:
            del self.writes[self.mark :]
            if self._folded > self.mark:
                self._overlay = {}
                self._folded = 0

    @property
    def store(self) -> EventStore:
        """The store this batch commits to (process managers record their decisions in it)."""
        return self._store

    @property
    def event_id(self) -> str:
        """The id of the event being handled (use it as the idempotency key of effects)."""
        if self.event is None:
            raise ValidationError("no event is being handled")
        return self.event.event_id

    def _scoped(self, t: Table, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with the tenant column of a per-tenant table set (ValidationError when
        they name another tenant, or there is no tenant to scope to)."""
        if not t.per_tenant:
            return dict(values)
        tenant = self.tenant
        if tenant is None:
            if self.event is None:
                raise ValidationError(
                    f"table {t.name!r} is per tenant: handle an event or pass tenant=",
                    field="tenant",
                )
            tenant = self.event.stream.tenant
        if values.get(TENANT, tenant) != tenant:
            raise ValidationError(
                f"table {t.name!r}: tenant {values[TENANT]!r} is not {tenant!r}", field="tenant"
            )
        return {TENANT: tenant, **values}

    # --- writes -------------------------------------------------------------------------------

    def _table(self, name: str) -> Table:
        table = self._tables.get(name)
        if table is None:
            raise ValidationError(
                f"unknown table {name!r}; this projection declares: {', '.join(self._tables)}",
                field="table",
            )
        return table

    def upsert(self, table: str, row: Mapping[str, Any] | None = None, **values: Any) -> None:
        """Insert the row, or update the given columns of the row with the same primary key."""
        try:
            t, physical, key = self._targets[table]
        except KeyError:
            t = self._table(table)
            physical, key = self._physical[table], t.primary_key
            self._targets[table] = (t, physical, key)
        if row is not None:
            values = {**row, **values}
        if t.per_tenant:
            values = self._scoped(t, values)
        columns = tuple(values)
        known = t.checked.get(columns)
        if known is None:
            t.shape(columns)  # ValidationError if they are not the table's
        else:
            columns = known
        # TableWrite("upsert", ...) without the NamedTuple __new__ call
        self.writes.append(
            _new(TableWrite, ("upsert", physical, columns, tuple(values.values()), None, key))
        )

    def delete(self, table: str, **key: Any) -> None:
        """Delete the row with this primary key (no error if there is none)."""
        t = self._table(table)
        key = self._scoped(t, key)
        if set(key) != set(t.primary_key):
            raise ValidationError(f"a delete from {table!r} needs exactly {t.primary_key}")
        self.writes.append(
            TableWrite.delete(self._physical[table], {c: key[c] for c in t.primary_key})
        )

    async def delete_where(self, table: str, **where: Any) -> int:
        """Delete every row whose columns equal ``where`` (as this batch has left them); how
        many. E.g. a stream's rows when it is deleted: handle ``chronik.STREAM_DELETED`` and call
        ``rm.delete_where("lines", order_id=event.stream.aggregate_id)`` (the deletion event
        reaches the stream's partition after its other events: chronik.store.deletion)."""
        t = self._table(table)
        if not where:
            raise ValidationError("delete_where needs at least one column", field="where")
        rows = await self.query(table, **where)
        for row in rows:
            self.delete(table, **{c: row[c] for c in t.primary_key})
        return len(rows)

    def _fold(self) -> dict[_Key, _Entry]:
        """The overlay of the batch's writes so far (incremental)."""
        overlay = self._overlay
        writes = self.writes
        for w in writes[self._folded :]:
            t = self._logical.get(w.table)
            if t is None:  # a bookkeeping write staged with the batch (a replay mark)
                continue
            if w.op == "delete":
                overlay[(t.name, w.row)] = ("gone", {})
                continue
            pk_at, full = t.shapes.get(w.columns) or t.shape(w.columns)
            k = (t.name, tuple([w.row[i] for i in pk_at]))
            data = dict(zip(w.columns, w.row, strict=True))
            prior = overlay.get(k)
            if full:
                overlay[k] = ("row", data)
            elif prior is None:
                overlay[k] = ("patch", data)
            elif prior[0] == "gone":
                overlay[k] = ("row", {c: data.get(c) for c, _ in t.columns})
            else:
                overlay[k] = (prior[0], {**prior[1], **data})
        self._folded = len(writes)
        return overlay

    # --- reads (committed rows, with this batch's writes laid over them) ----------------------

    async def get(self, table: str, **key: Any) -> dict[str, Any] | None:
        """The row with this primary key, as this batch has left it so far."""
        t = self._table(table)
        key = self._scoped(t, key)
        if set(key) != set(t.primary_key):
            raise ValidationError(f"get from {table!r} needs exactly {t.primary_key}")
        entry = self._fold().get((table, tuple(key[c] for c in t.primary_key)))
        if entry is not None and entry[0] != "patch":
            return None if entry[0] == "gone" else dict(entry[1])
        if entry is None:
            rows = await self._store.read_table(self._physical[table], key, limit=1)
            return rows[0] if rows else None
        return await self._laid_over(t, table, key, entry[1])

    async def _laid_over(
        self, t: Table, table: str, key: dict[str, Any], patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``patch`` laid over the stored row of ``key`` (NULLs where none is stored)."""
        rows = await self._store.read_table(self._physical[table], key, limit=1)
        return {**(rows[0] if rows else {c: None for c, _ in t.columns}), **patch}

    async def query(self, table: str, **where: Any) -> list[dict[str, Any]]:
        """Rows whose columns equal ``where``, as this batch has left them so far."""
        t = self._table(table)
        return await self._matching(t, table, self._scoped(t, where))

    async def query_every_tenant(self, table: str, **where: Any) -> list[dict[str, Any]]:
        """``query`` across the tenants of a per-tenant table (a process manager matching an
        event that names no tenant: a deadline fired before its saga's tables were)."""
        return await self._matching(self._table(table), table, where)

    async def _matching(self, t: Table, table: str, where: dict[str, Any]) -> list[dict[str, Any]]:
        rows = await self._store.read_table(self._physical[table], where)
        by_key = {tuple(r[c] for c in t.primary_key): r for r in rows}
        for (name, key), (kind, data) in list(self._fold().items()):
            if name != table:
                continue
            if kind == "gone":
                by_key.pop(key, None)
                continue
            if kind == "patch":
                pk = dict(zip(t.primary_key, key, strict=True))
                data = await self._laid_over(t, table, pk, data)
            if all(data.get(c) == v for c, v in where.items()):
                by_key[key] = dict(data)
            else:
                by_key.pop(key, None)
        return list(by_key.values())
