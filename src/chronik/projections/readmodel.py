"""The read-model helper: writes staged into a projection's transaction.

A projection declares its tables (name, columns, primary key: ``chronik.projections.table``).
Handlers receive a ``ReadModel`` and call ``upsert`` / ``upsert_row`` /
``delete`` (staged, committed with the checkpoint in one unit of work) and ``get`` / ``query``
(the committed rows with this batch's staged writes laid over them). Table and column names are
validated identifiers; values are always bound parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from chronik.errors import ValidationError
from chronik.messages import RecordedEvent
from chronik.projections.table import TENANT, Table, physical_name
from chronik.store.base import EventStore, TableWrite

__all__ = ["TENANT", "ReadModel", "Table", "physical_name"]

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
        # table -> (width, itemgetter, physical name, columns, primary key) of its first upsert
        # (None: the table had two shapes of one width)
        self._fast: dict[str, tuple[int, Any, str, tuple[str, ...], tuple[str, ...]] | None] = {}
        # table -> (physical name, columns, primary key) of upsert_row
        self._rows: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
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

    def upsert(
        self, table: str = "", row: Mapping[str, Any] | None = None, /, **values: Any
    ) -> None:
        """Insert the row, or update the given columns of the row with the same primary key."""
        # table and row are positional-only, so CPython binds the keyword arguments to
        # ``values`` without comparing each with every parameter name (upsert(table=...,
        # row=...) still work: _upsert); the columns of a table's first upsert, given again
        # in any order, are taken out of ``values`` by one itemgetter (KeyError: another shape)
        fast = self._fast.get(table)
        if fast is not None and row is None:
            width, cells, physical, columns, key = fast
            if len(values) == width:
                try:
                    row_values = cells(values)
                except KeyError:  # another shape of the same width: the general way from
                    self._fast[table] = None  # now on (no exception per row of either)
                else:
                    # TableWrite("upsert", ...) without the NamedTuple __new__ call
                    self.writes.append(
                        _new(TableWrite, ("upsert", physical, columns, row_values, None, key))
                    )
                    return
        self._upsert(table, row, values)

    def _upsert(self, table: str, row: Mapping[str, Any] | None, values: dict[str, Any]) -> None:
        """``upsert`` of what its fast path leaves: a first row of its columns, a mapping,
        a per-tenant table, the keyword forms ``table=`` and ``row=``."""
        if not table and "table" in values:
            table = values.pop("table")
        if row is None and "row" in values:
            row = values.pop("row")
        t = self._table(table)
        physical, key = self._physical[table], t.primary_key
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
        if table not in self._fast and not t.per_tenant and len(columns) > 1:
            self._fast[table] = (len(columns), itemgetter(*columns), physical, columns, key)
        self.writes.append(
            _new(TableWrite, ("upsert", physical, columns, tuple(values.values()), None, key))
        )

    def upsert_row(self, table: str, values: Sequence[Any], /) -> None:
        """Insert or replace a whole row: ``values`` (a tuple or list) in the order of the
        table's declared columns, a per-tenant table's tenant column left out. The same write
        as ``upsert`` with every column, and the cheapest: no keyword arguments to gather."""
        try:
            physical, columns, key = self._rows[table]
        except KeyError:
            t = self._table(table)
            if t.per_tenant:  # the tenant column goes first: the general way
                tenanted = [c for c, _ in t.columns[1:]]
                row = dict(zip(tenanted, self._row_values(t, values), strict=True))
                self._upsert(table, None, row)
                return
            names = tuple(c for c, _ in t.columns)
            if names not in t.checked:
                t.shape(names)
            physical, columns, key = (
                self._physical[table],
                t.checked.get(names, names),
                t.primary_key,
            )
            self._rows[table] = (physical, columns, key)
        if type(values) is not tuple or len(values) != len(columns):
            values = self._row_values(self._tables[table], values)
        self.writes.append(_new(TableWrite, ("upsert", physical, columns, values, None, key)))

    def _row_values(self, t: Table, values: object) -> tuple[Any, ...]:
        """``values`` of ``upsert_row`` as a tuple (ValidationError: not a tuple or list of
        one value per declared column)."""
        names = tuple(c for c, _ in t.columns)[1 if t.per_tenant else 0 :]
        if not isinstance(values, (tuple, list)) or len(values) != len(names):
            got = (
                f"{len(values)} values"
                if isinstance(values, (tuple, list))
                else type(values).__name__
            )
            raise ValidationError(
                f"upsert_row into {t.name!r} needs a tuple of one value per column {names}, "
                f"in that order; got {got}",
                field="values",
            )
        return tuple(values)

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
