"""The read side of the PostgreSQL store (driver errors are translated by ``errors``).

``read_all`` pages are bounded by the safe horizon: only rows whose transaction id is below the
oldest transaction still running are returned, in ``(xid, id)`` order, so a transaction that
took its id early and commits late is never passed by a reader.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, NamedTuple, TypeVar

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
from chronik.store.postgres.dcb import query_page_sql, query_payloads_sql
from chronik.store.postgres.errors import read_error
from chronik.store.postgres.pool import ConnectionPool
from chronik.store.postgres.tables import read_table
from chronik.store.tables import Condition

__all__ = ["HORIZON", "HorizonLag", "PostgresReader"]

T = TypeVar("T")
COLS: Final = (
    "e.xid, e.id, e.stream_id, e.sequence, e.event_id, e.type, e.schema_version, e.payload, "
    "e.metadata, e.content_type, e.recorded_at, e.tags"
)
HORIZON: Final = "(SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint)"
_STREAM_CACHE_LIMIT: Final = 200_000
#: How many streams created after an unknown one a read resolves with it.
_STREAMS_AHEAD: Final = 1024


class HorizonLag(NamedTuple):
    """How far the safe horizon (what readers may deliver) is behind the committed head.

    ``pending_events`` are committed but held back because an older transaction is still
    running; ``oldest_transaction_seconds`` is the age of the oldest transaction holding an id
    (anywhere in the cluster), None when none is running.
    """

    head: Position | None
    safe_head: Position | None
    pending_events: int
    oldest_transaction_seconds: float | None


class PostgresReader:
    """Reads pages of events and streams through the pool; caches the streams of ids met in
    the log (immutable). A stream's own reads name it by its key: no id to look up first."""

    _pool: ConnectionPool
    _s: str  # the quoted schema name
    url: str
    fault_hook: FaultHook | None

    def _init_reader(self) -> None:
        self._streams_by_id: dict[int, StreamId] = {}

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run a read; driver errors (any unexpected exception) become StoreUnavailable."""
        try:
            if self.fault_hook is not None:
                self.fault_hook("fetch", None)
            return await fn()
        except BaseException as exc:
            error = read_error(what, self.url, exc)
            if error is exc:
                raise
            raise error from exc

    async def _read_table(
        self,
        table: str,
        where: tuple[Condition, ...],
        order_by: tuple[tuple[str, bool], ...],
        limit: int | None,
        after: tuple[Any, ...] | None,
    ) -> list[dict[str, Any]]:
        return await self._call(
            "read",
            lambda: read_table(self._pool.fetch, self._s, table, where, order_by, limit, after),
        )

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self._call("read", lambda: self._pool.fetch(sql, *args))
        return rows

    def _remember(self, sid: int, stream: StreamId) -> None:
        if len(self._streams_by_id) > _STREAM_CACHE_LIMIT:
            self._streams_by_id.clear()
        self._streams_by_id[sid] = stream

    async def _resolve_streams(self, ids: set[int]) -> None:
        missing = [i for i in ids if i not in self._streams_by_id]
        if missing:
            # and the streams created just after the first: ids grow with creation, and a read
            # of the log meets new streams in about that order (one round trip, not one a page).
            # The ids go as text[]: asyncpg has no built-in bigint[] codec and would introspect
            # the type on each new connection's first read (~6 ms here), inside a timed read.
            low = min(missing)
            rows = await self._fetch(
                f"SELECT id, tenant, domain, aggregate_id FROM {self._s}.streams "
                "WHERE id = ANY($1::text[]::bigint[]) OR (id > $2 AND id <= $3)",
                [str(i) for i in missing],
                low,
                low + _STREAMS_AHEAD,
            )
            for sid, tenant, domain, aggregate_id in rows:
                self._remember(sid, StreamId(domain, aggregate_id, tenant))

    async def _recorded(self, rows: Sequence[Any]) -> list[RecordedEvent]:
        streams = self._streams_by_id
        try:
            return _events(rows, streams)
        except KeyError:
            await self._resolve_streams({r[2] for r in rows})
            return _events(rows, streams)

    async def _stream_version(self, stream: StreamId) -> int | None:
        rows = await self._fetch(
            f"SELECT version, truncate_before FROM {self._s}.streams WHERE tenant = $1 "
            "AND domain = $2 AND aggregate_id = $3",
            stream.tenant,
            stream.domain,
            stream.aggregate_id,
        )
        return int(rows[0][0]) if rows and rows[0][0] >= max(rows[0][1], 0) else None

    async def _tombstoned(self, stream: StreamId) -> bool:
        rows = await self._fetch(
            f"SELECT tombstone FROM {self._s}.streams WHERE tenant = $1 AND domain = $2 "
            "AND aggregate_id = $3",
            stream.tenant,
            stream.domain,
            stream.aggregate_id,
        )
        return bool(rows and rows[0][0])

    def _stream_sql(self, cols: str, backward: bool = False) -> str:
        """Up to $5 events (``cols`` of ``events e``) of the stream ($1 tenant, $2 domain, $3
        aggregate id) from sequence $4 on, in either direction, among those it still shows
        (chronik.store.deletion). The statement finds the stream by its key itself: a stream
        read is one round trip and one prepared statement, whether its id is known or not."""
        op, order = ("<=", "DESC") if backward else (">=", "ASC")
        key = f"FROM {self._s}.streams WHERE tenant = $1 AND domain = $2 AND aggregate_id = $3"
        return (
            f"SELECT {cols} FROM {self._s}.events e WHERE e.stream_id = (SELECT id {key}) "
            f"AND e.sequence {op} $4 AND e.sequence >= (SELECT truncate_before {key}) "
            f"ORDER BY e.sequence {order} LIMIT $5"
        )

    async def _head(self) -> Position | None:
        # The safe head: the last position every reader can see. A later-positioned event of
        # a transaction that committed out of order is not the head yet, so a consumer that
        # starts "after the head" never skips an earlier transaction still in flight.
        rows = await self._fetch(
            f"SELECT e.xid, e.id FROM {self._s}.events e WHERE e.xid < {HORIZON} "
            "ORDER BY e.xid DESC, e.id DESC LIMIT 1"
        )
        return Position(rows[0][0], rows[0][1]) if rows else None

    async def _read_stream_payloads(
        self, stream: StreamId, from_sequence: int | None, limit: int
    ) -> list[Any]:
        # content_type is NULL for JSON: -1 (no schema version) says "not JSON"
        cols = (
            "e.sequence, e.type, CASE WHEN e.content_type IS NULL THEN e.schema_version "
            "ELSE -1 END, e.payload"
        )
        key = (stream.tenant, stream.domain, stream.aggregate_id)
        return await self._fetch(self._stream_sql(cols), *key, from_sequence or 0, limit)

    async def _read_stream_page(
        self, stream: StreamId, from_sequence: int | None, backward: bool, limit: int
    ) -> list[RecordedEvent]:
        start = from_sequence if from_sequence is not None else (2**62 if backward else 0)
        key = (stream.tenant, stream.domain, stream.aggregate_id)
        rows = await self._fetch(self._stream_sql(COLS, backward), *key, start, limit)
        return _events(rows, {rows[0][2]: stream}) if rows else []

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
        where = [f"e.xid < {HORIZON}"]
        args: list[Any] = []
        if tenant is not None:  # the (tenant, xid, id) index (schema 9)
            args.append(tenant)
            where.append(f"e.tenant = ${len(args)}")
        if after is not None:
            args += [after.commit, after.index]
            where.append(f"(e.xid, e.id) > (${len(args) - 1}, ${len(args)})")
        if before is not None:
            args += [before.commit, before.index]
            where.append(f"(e.xid, e.id) < (${len(args) - 1}, ${len(args)})")
        if domains is not None:
            args.append(list(domains))
            where.append(
                f"e.stream_id IN (SELECT id FROM {self._s}.streams "
                f"WHERE domain = ANY(${len(args)}))"
            )
        if types is not None:
            args.append(list(types))
            where.append(f"e.type = ANY(${len(args)})")
        args.append(limit)
        order = "DESC" if backward else "ASC"
        rows = await self._fetch(
            f"SELECT {COLS} FROM {self._s}.events e WHERE {' AND '.join(where)} "
            f"ORDER BY e.xid {order}, e.id {order} LIMIT ${len(args)}",
            *args,
        )
        return await self._recorded(rows)

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
        # tag items through event_tags, gap-safe as _read_all_page (below the horizon); the
        # streams come with the rows (a tagged event's stream is its own: never cached). Rows:
        # COLS (xid, id, stream_id, sequence, event_id, type, schema_version, payload,
        # metadata, content_type, recorded_at, tags), then tenant, domain, aggregate_id.
        sql, args = query_page_sql(self._s, COLS, query, cursor, limit, backward)
        rows = await self._fetch(sql, *args)
        known = self._streams_by_id
        streams = {r[2]: known.get(r[2]) or StreamId(r[13], r[14], r[12]) for r in rows}
        return _events([r[:12] for r in rows], streams)

    async def _read_query_payloads(
        self, query: Query, after: Position | None, limit: int, tenant: str | None = None
    ) -> list[Any]:
        # the keys of _read_query_page, then only what a fold needs: no streams, no objects
        sql, args = query_payloads_sql(self._s, query, after, limit, tenant)
        return await self._fetch(sql, *args)

    async def _settled(self, after: Position | None) -> bool:
        """False while committed events after ``after`` wait behind a running transaction."""
        a = after or Position(0, 0)
        blocked = await self._fetch(
            f"SELECT 1 FROM {self._s}.events e WHERE e.xid >= {HORIZON} "
            "AND (e.xid, e.id) > ($1, $2) LIMIT 1",
            a.commit,
            a.index,
        )
        return not blocked

    async def _get_event(self, event_id: str) -> RecordedEvent | None:
        rows = await self._fetch(
            f"SELECT {COLS} FROM {self._s}.events e WHERE e.event_id = $1", event_id
        )
        return (await self._recorded(rows))[0] if rows else None

    async def _load_snapshot(self, stream: StreamId) -> Snapshot | None:
        rows = await self._fetch(
            f"SELECT sequence, type, schema_version, state, taken_at FROM {self._s}.snapshots "
            "WHERE tenant = $1 AND domain = $2 AND aggregate_id = $3",
            stream.tenant,
            stream.domain,
            stream.aggregate_id,
        )
        if not rows:
            return None
        seq, stype, version, state, taken_at = rows[0]
        return Snapshot(stream, seq, stype, version, state, taken_at)

    async def _load_checkpoint(self, name: str, partition: int) -> Checkpoint | None:
        rows = await self._fetch(
            f"SELECT commit_pos, index_pos, epoch, updated_at FROM {self._s}.checkpoints "
            "WHERE name = $1 AND partition = $2",
            name,
            partition,
        )
        if not rows:
            return None
        commit, index, epoch, updated_at = rows[0]
        return Checkpoint(name, partition, Position(commit, index), epoch, updated_at)

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
        where = ["id > $1", "version >= 0"]
        args: list[Any] = [cursor or 0]
        if tenant is not None:  # the (tenant, domain, aggregate_id) key
            args.append(tenant)
            where.append(f"tenant = ${len(args)}")
        if domain is not None:
            args.append(domain)
            where.append(f"domain = ${len(args)}")
        if prefix:
            args.append(prefix)
            where.append(f"left(aggregate_id, length(${len(args)})) = ${len(args)}")
        args.append(limit)
        rows = await self._fetch(
            f"SELECT id, tenant, domain, aggregate_id, version FROM {self._s}.streams "
            f"WHERE {' AND '.join(where)} ORDER BY id LIMIT ${len(args)}",
            *args,
        )
        infos = [StreamInfo(StreamId(r[2], r[3], r[1]), r[4]) for r in rows]
        return infos, (rows[-1][0] if rows else None)


def _events(rows: Sequence[Any], streams: dict[int, StreamId]) -> list[RecordedEvent]:
    """Rows of COLS as events (KeyError: a stream id not in ``streams``). Each row unpacked
    once (indexing an asyncpg Record twelve times costs twice as much); an event without a
    content type or tags (most) made from the values it has, the others left to defaults."""
    return [
        RecordedEvent(eid, streams[sid], seq, etype, ver, payload, Position(xid, rid), at, md)
        if ct is None and tags is None
        else RecordedEvent(
            eid,
            streams[sid],
            seq,
            etype,
            ver,
            payload,
            Position(xid, rid),
            at,
            md,
            ct or JSON,
            tuple(tags.split(" ")) if tags else (),
        )
        for xid, rid, sid, seq, eid, etype, ver, payload, md, ct, at, tags in rows
    ]
