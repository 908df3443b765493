"""The read side of the SQLite store: bounded pages on the reader connection, on the event loop
(driver errors are translated by ``errors``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from chronik.dcb import Query
from chronik.messages import (
    JSON,
    Checkpoint,
    Position,
    RecordedEvent,
    Snapshot,
    StreamId,
    StreamInfo,
)
from chronik.store.base import FaultHook
from chronik.store.sqlite import rows as page_rows
from chronik.store.sqlite.dcb import query_payloads, query_positions
from chronik.store.sqlite.errors import read_error, table_read_error
from chronik.store.sqlite.runs import SQLiteRuns
from chronik.store.table_query import order_sql, where_sql
from chronik.store.tables import Condition

__all__ = ["SQLiteReader"]

# every column of an event (read_all pages choose theirs: chronik.store.sqlite.rows)
_COLS: Final = page_rows.COLS
# one stream's events: its id is known, so the row is unpacked straight into a RecordedEvent
_STREAM_COLS: Final = (
    "event_id, sequence, type, schema_version, payload, position, recorded_at, metadata, "
    "content_type, tags"
)
SELECT_STREAM: Final = (
    "SELECT id, version, truncate_before, tombstone FROM chronik_streams "
    "WHERE tenant = ? AND domain = ? AND aggregate_id = ?"
)
# the events a stream still shows: from its truncation point (chronik.store.deletion)
_SHOWN: Final = "AND sequence >= (SELECT truncate_before FROM chronik_streams WHERE id = ?)"
# the same from a sequence, as one lower bound: SQLite seeks the index to it (with two bounds it
# seeks to the first and filters every row below the other)
_SHOWN_FROM: Final = (
    "AND sequence >= max(?, (SELECT truncate_before FROM chronik_streams WHERE id = ?))"
)
_STREAM_CACHE_LIMIT: Final = 200_000


class SQLiteReader(SQLiteRuns):
    """Reads pages of events and streams; caches stream ids (they never change)."""

    native_tenant_conditions = True  # dcb.check_unit counts a condition's tenant only

    path: str
    _rconn: sqlite3.Connection
    fault_hook: FaultHook | None

    def _init_reader(self) -> None:
        self._stream_ids: dict[StreamId, int] = {}
        self._streams_by_id: dict[int, StreamId] = {}
        self._wide_pages = False  # read_all pages wide while most rows have metadata or tags

    def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            if self.fault_hook is not None:
                self.fault_hook("fetch", None)
            return self._rconn.execute(sql, params).fetchall()
        except BaseException as exc:
            error = read_error(self.path, exc)
            if error is exc:
                raise
            raise error from exc

    def _stream_key_id(self, stream: StreamId) -> int | None:
        sid = self._stream_ids.get(stream)
        if sid is None:
            rows = self._read(
                "SELECT id FROM chronik_streams WHERE tenant = ? AND domain = ? "
                "AND aggregate_id = ?",
                (stream.tenant, stream.domain, stream.aggregate_id),
            )
            if not rows:
                return None
            sid = rows[0][0]
            self._remember(sid, stream)
        return sid

    def _remember(self, sid: int, stream: StreamId) -> None:
        if len(self._stream_ids) > _STREAM_CACHE_LIMIT:
            self._stream_ids.clear()
            self._streams_by_id.clear()
        self._stream_ids[stream] = sid
        self._streams_by_id[sid] = stream

    def _resolve_streams(self, ids: set[int]) -> None:
        """Cache the streams of one page: the cache is emptied before (never while) they are
        added, so it may exceed its limit by one page until the next resolve."""
        missing = [i for i in ids if i not in self._streams_by_id]
        if len(self._streams_by_id) + len(missing) > _STREAM_CACHE_LIMIT:
            self._stream_ids.clear()
            self._streams_by_id.clear()
            missing = list(ids)
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            rows = self._read(
                "SELECT id, tenant, domain, aggregate_id FROM chronik_streams "
                f"WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for sid, tenant, domain, aggregate_id in rows:
                stream = StreamId(domain, aggregate_id, tenant)
                self._stream_ids[stream] = sid
                self._streams_by_id[sid] = stream

    async def _stream_version(self, stream: StreamId) -> int | None:
        rows = self._read(SELECT_STREAM, (stream.tenant, stream.domain, stream.aggregate_id))
        return rows[0][1] if rows and rows[0][1] >= rows[0][2] else None

    async def _tombstoned(self, stream: StreamId) -> bool:
        rows = self._read(SELECT_STREAM, (stream.tenant, stream.domain, stream.aggregate_id))
        return bool(rows and rows[0][3])

    async def _head(self) -> Position | None:
        rows = self._read("SELECT max(position) FROM chronik_events", ())
        return None if rows[0][0] is None else Position(rows[0][0])

    async def _read_stream_page(
        self, stream: StreamId, from_sequence: int | None, backward: bool, limit: int
    ) -> list[RecordedEvent]:
        sid = self._stream_key_id(stream)
        if sid is None:
            return []
        params: list[Any]
        if backward:
            shown = _SHOWN if from_sequence is None else f"{_SHOWN} AND sequence <= ?"
            params = [sid, sid] if from_sequence is None else [sid, sid, from_sequence]
            order = "DESC"
        else:
            shown, params, order = _SHOWN_FROM, [sid, from_sequence or 0, sid], "ASC"
        params.append(limit)
        rows = self._read(
            f"SELECT {_STREAM_COLS} FROM chronik_events WHERE stream_id = ? {shown} "
            f"ORDER BY sequence {order} LIMIT ?",
            params,
        )
        # tags: inline, as chronik.store.sqlite.dcb.split_tags (one call less per event)
        return [
            RecordedEvent(
                eid,
                stream,
                seq,
                etype,
                sv,
                payload,
                Position(pos),
                at,
                md,
                ct or JSON,
                () if tg is None else tuple(tg.split(" ")),
            )
            for eid, seq, etype, sv, payload, pos, at, md, ct, tg in rows
        ]

    async def _read_stream_payloads(
        self, stream: StreamId, from_sequence: int | None, limit: int
    ) -> list[Any]:
        sid = self._stream_key_id(stream)
        if sid is None:
            return []
        return self._read(
            # content_type is NULL for JSON: one column says "JSON at version N" or the type
            "SELECT sequence, type, ifnull(content_type, schema_version), payload "
            f"FROM chronik_events WHERE stream_id = ? {_SHOWN_FROM} ORDER BY sequence LIMIT ?",
            (sid, from_sequence or 0, sid, limit),
        )

    async def _get_event(self, event_id: str) -> RecordedEvent | None:
        rows = self._read(f"SELECT {_COLS} FROM chronik_events WHERE event_id = ?", (event_id,))
        return self._recorded(rows)[0] if rows else None

    async def _load_snapshot(self, stream: StreamId) -> Snapshot | None:
        rows = self._read(
            "SELECT sequence, type, schema_version, state, taken_at FROM chronik_snapshots "
            "WHERE tenant = ? AND domain = ? AND aggregate_id = ?",
            (stream.tenant, stream.domain, stream.aggregate_id),
        )
        if not rows:
            return None
        seq, stype, version, state, taken_at = rows[0]
        return Snapshot(stream, seq, stype, version, state, taken_at)

    async def _load_checkpoint(self, name: str, partition: int) -> Checkpoint | None:
        rows = self._read(
            "SELECT commit_pos, index_pos, epoch, updated_at FROM chronik_checkpoints "
            "WHERE name = ? AND partition = ?",
            (name, partition),
        )
        if not rows:
            return None
        commit, index, epoch, updated_at = rows[0]
        return Checkpoint(name, partition, Position(commit, index), epoch, updated_at)

    async def _read_all_page(
        self,
        after: Position | None,
        before: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        limit: int,
        backward: bool,
        tenant: str | None = None,
    ) -> list[RecordedEvent]:
        where: list[str] = []
        params: list[Any] = []
        if tenant is not None:  # the (tenant, position) index (schema 9)
            where.append("tenant = ?")
            params.append(tenant)
        if after is not None:
            where.append("position > ?")
            params.append(after.commit)
        if before is not None:
            where.append("position < ?")
            params.append(before.commit)
        if domains is not None:
            where.append(
                "stream_id IN (SELECT id FROM chronik_streams WHERE domain IN "
                f"({','.join('?' * len(domains))}))"
            )
            params.extend(domains)
        if types is not None:
            where.append(f"type IN ({','.join('?' * len(types))})")
            params.extend(types)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        params.append(limit)
        one = types[0] if types is not None and len(types) == 1 else None
        rest = f"FROM chronik_events {clause} ORDER BY position {'DESC' if backward else 'ASC'}"
        if not self._wide_pages:
            return self._narrow_page(f"{rest} LIMIT ?", params, one)
        found = self._read(
            f"SELECT {page_rows.page_cols(one is not None, True)} {rest} LIMIT ?", params
        )
        self._wide_pages = not page_rows.plain_end(found, one is not None)
        return self._recorded(found, one, True)

    def _narrow_page(self, rest: str, params: list[Any], one: str | None) -> list[RecordedEvent]:
        """A read_all page of narrow rows, the rows with metadata, a content type or tags
        completed by a second read: both in one read transaction, so that a redaction or a
        delete committed between them cannot mix into the page."""
        begun = not self._rconn.in_transaction
        if begun:
            self._statement("BEGIN")
        try:
            found = self._read(
                f"SELECT {page_rows.page_cols(one is not None, False)} {rest}", params
            )
            page = self._recorded(found, one, False)
            flagged = page_rows.flagged(page)
            self._wide_pages = len(flagged) > len(found) // 4  # more: wide rows are cheaper
            for start in range(0, len(flagged), 500):
                chunk = flagged[start : start + 500]
                extras = self._read(f"{page_rows.EXTRAS}({','.join('?' * len(chunk))})", chunk)
                page_rows.add_extras(page, extras)
            return page
        finally:
            if begun and self._rconn.in_transaction:
                self._statement("COMMIT")

    def _statement(self, sql: str) -> None:
        """Run a statement of the reader's own (no rows), driver errors translated."""
        try:
            self._rconn.execute(sql)
        except sqlite3.Error as exc:
            error = read_error(self.path, exc)
            if error is exc:
                raise
            raise error from exc

    async def _read_tenant_page(
        self,
        tenant: str,
        after: Position | None,
        before: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        limit: int,
        backward: bool,
    ) -> list[RecordedEvent]:
        return await self._read_all_page(after, before, domains, types, limit, backward, tenant)

    async def _read_query_page(
        self, query: Query, cursor: Position | None, limit: int, backward: bool
    ) -> list[RecordedEvent]:
        return await self._read_query_tenant_page(query, None, cursor, limit, backward)

    async def _read_query_tenant_page(
        self, query: Query, tenant: str | None, cursor: Position | None, limit: int, backward: bool
    ) -> list[RecordedEvent]:
        after, before = (None, cursor) if backward else (cursor, None)
        if any(not item.tags and not item.types for item in query.items):
            return await self._read_all_page(after, before, None, None, limit, backward, tenant)
        positions = query_positions(self._read, query, after, before, backward, limit, tenant)
        if not positions:
            return []
        rows = self._read(
            f"SELECT {_COLS} FROM chronik_events WHERE position IN "
            f"({','.join('?' * len(positions))}) ORDER BY position {'DESC' if backward else 'ASC'}",
            positions,
        )
        return self._recorded(rows)

    async def _read_query_payloads(
        self, query: Query, after: Position | None, limit: int, tenant: str | None = None
    ) -> list[Any]:
        return query_payloads(self._read, query, after, limit, tenant)

    async def _read_table(
        self,
        table: str,
        where: tuple[Condition, ...],
        order_by: tuple[tuple[str, bool], ...],
        limit: int | None,
        after: tuple[Any, ...] | None,
    ) -> list[dict[str, Any]]:
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return "?"

        # identifiers validated by EventStore.read_table; values are bound
        sql = f"SELECT * FROM {table}" + where_sql(where, order_by, after, param)
        sql += order_sql(order_by, nulls=False)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        try:
            cur = self._rconn.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except sqlite3.Error as exc:
            raise table_read_error(self.path, table, exc) from exc

    def _recorded(
        self, found: list[Any], etype: str | None = None, wide: bool = True
    ) -> list[RecordedEvent]:
        """RecordedEvents of rows of ``page_rows.page_cols(etype is not None, wide)``."""
        try:
            return page_rows.events(found, self._streams_by_id, etype, wide)
        except KeyError:  # a stream not seen yet: resolve the page's streams once, then build
            self._resolve_streams({row[1] for row in found})
            return page_rows.events(found, self._streams_by_id, etype, wide)

    async def _list_tenant_streams_page(
        self, tenant: str, domain: str | None, prefix: str | None, cursor: int | None, limit: int
    ) -> tuple[list[StreamInfo], int | None]:
        page, after = await self._list_streams_page(domain, prefix, cursor, limit, tenant)
        return page, (after if len(page) == limit else None)

    async def _list_streams_page(
        self,
        domain: str | None,
        prefix: str | None,
        cursor: int | None,
        limit: int,
        tenant: str | None = None,
    ) -> tuple[list[StreamInfo], int | None]:
        where = ["id > ?", "version >= 0"]
        params: list[Any] = [cursor or 0]
        if tenant is not None:  # the (tenant, domain, aggregate_id) key
            where.append("tenant = ?")
            params.append(tenant)
        if domain is not None:
            where.append("domain = ?")
            params.append(domain)
        if prefix:
            where.append("substr(aggregate_id, 1, ?) = ?")
            params.extend([len(prefix), prefix])
        params.append(limit)
        rows = self._read(
            "SELECT id, tenant, domain, aggregate_id, version FROM chronik_streams "
            f"WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
            params,
        )
        infos = [StreamInfo(StreamId(r[2], r[3], r[1]), r[4]) for r in rows]
        return infos, (rows[-1][0] if rows else None)
