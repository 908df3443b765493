"""The read side of the MySQL store (driver errors are translated by ``errors``).

Positions are assigned in commit order (see ``chronik.store.mysql``), so a reader needs no
horizon: every event at or before a committed position has committed too, and ``position >
after`` in position order never skips one. Each read runs in autocommit (one statement, one
READ COMMITTED snapshot) on a pooled connection; a read that fails because a pooled connection
had died (a server restart) runs once more on a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import asyncmy

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
from chronik.store.mysql.dcb import query_page_sql
from chronik.store.mysql.errors import DRIVER_ERRORS, is_connection_error, read_error
from chronik.store.mysql.pool import ConnectionPool, run
from chronik.store.mysql.tables import read_table
from chronik.store.records import FaultHook
from chronik.store.tables import Condition

__all__ = ["COLS", "MySQLReader", "events_of"]

#: The columns of a recorded event (``events e`` joined with ``streams s``).
COLS: Final = (
    "e.`position`, e.`sequence`, e.event_id, e.`type`, e.schema_version, e.payload, "
    "e.metadata, e.content_type, e.recorded_at, e.tags, s.tenant, s.domain, s.aggregate_id"
)
_FROM: Final = "FROM events e JOIN streams s ON s.id = e.stream_id"


def events_of(rows: Sequence[tuple[Any, ...]]) -> list[RecordedEvent]:
    """Rows of COLS as events."""
    return [
        RecordedEvent(
            eid,
            StreamId(domain, agg, tenant),
            seq,
            etype,
            ver,
            bytes(payload),
            Position(pos),
            at,
            None if md is None else bytes(md),
            ct or JSON,
            tuple(tags.split(" ")) if tags else (),
        )
        for pos, seq, eid, etype, ver, payload, md, ct, at, tags, tenant, domain, agg in rows
    ]


class MySQLReader:
    """Reads pages of events, streams, snapshots, checkpoints and tables through the pool."""

    _pool: ConnectionPool
    url: str
    fault_hook: FaultHook | None

    async def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement; driver errors become StoreUnavailable."""
        rows = await self._reading(lambda conn: _rows(conn, sql, args))
        result: list[tuple[Any, ...]] = rows
        return result

    async def _reading(self, fn: Any) -> Any:
        """``await fn(conn)`` on a pooled connection, once more on a new one if the pooled one
        turns out dead; errors typed (StoreUnavailable, or what ``fn`` raised of chronik's)."""
        for attempt in range(2):
            try:
                if self.fault_hook is not None:
                    self.fault_hook("fetch", None)
                conn = await self._pool.acquire()
            except BaseException as exc:
                error = read_error("read", self.url, exc)
                if error is exc:
                    raise
                raise error from exc
            ok = False
            try:
                result = await fn(conn)
                ok = True
                return result
            except BaseException as exc:
                ok = not is_connection_error(exc) and isinstance(exc, DRIVER_ERRORS)
                if attempt == 0 and is_connection_error(exc):
                    self._pool.discard_idle()  # the others died with it
                    continue
                error = read_error("read", self.url, exc)
                if error is exc:
                    raise
                raise error from exc
            finally:
                self._pool.release(conn, discard=not ok)
        raise AssertionError("unreachable")

    async def _read_table(
        self,
        table: str,
        where: tuple[Condition, ...],
        order_by: tuple[tuple[str, bool], ...],
        limit: int | None,
        after: tuple[Any, ...] | None,
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._reading(
            lambda conn: read_table(conn, table, where, order_by, limit, after)
        )
        return rows

    async def _stream_version(self, stream: StreamId) -> int | None:
        rows = await self._fetch(
            "SELECT version FROM streams WHERE tenant = %s AND domain = %s AND aggregate_id = %s",
            (stream.tenant, stream.domain, stream.aggregate_id),
        )
        return int(rows[0][0]) if rows and rows[0][0] >= 0 else None

    async def _head(self) -> Position | None:
        rows = await self._fetch("SELECT MAX(`position`) FROM events")
        return None if rows[0][0] is None else Position(int(rows[0][0]))

    async def _read_stream_page(
        self, stream: StreamId, from_sequence: int | None, backward: bool, limit: int
    ) -> list[RecordedEvent]:
        op, order = ("<=", "DESC") if backward else (">=", "ASC")
        start = from_sequence if from_sequence is not None else (2**62 if backward else 0)
        rows = await self._fetch(
            f"SELECT {COLS} {_FROM} WHERE s.tenant = %s AND s.domain = %s "
            f"AND s.aggregate_id = %s AND e.`sequence` {op} %s "
            f"ORDER BY e.`sequence` {order} LIMIT %s",
            (stream.tenant, stream.domain, stream.aggregate_id, start, limit),
        )
        return events_of(rows)

    async def _read_all_page(
        self,
        after: Position | None,
        before: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        limit: int,
        backward: bool,
    ) -> list[RecordedEvent]:
        if domains == () or types == ():
            return []
        where: list[str] = []
        args: list[Any] = []
        if after is not None:
            where.append("e.`position` > %s")
            args.append(after.commit)
        if before is not None:
            where.append("e.`position` < %s")
            args.append(before.commit)
        if domains is not None:
            where.append(f"s.domain IN ({', '.join(['%s'] * len(domains))})")
            args += domains
        if types is not None:
            where.append(f"e.`type` IN ({', '.join(['%s'] * len(types))})")
            args += types
        args.append(limit)
        order = "DESC" if backward else "ASC"
        cond = f"WHERE {' AND '.join(where)} " if where else ""
        rows = await self._fetch(
            f"SELECT {COLS} {_FROM} {cond}ORDER BY e.`position` {order} LIMIT %s", args
        )
        return events_of(rows)

    async def _read_query_page(
        self, query: Query, cursor: Position | None, limit: int, backward: bool
    ) -> list[RecordedEvent]:
        sql, args = query_page_sql(COLS, query, cursor, limit, backward)
        return events_of(await self._fetch(sql, args))

    async def _get_event(self, event_id: str) -> RecordedEvent | None:
        rows = await self._fetch(f"SELECT {COLS} {_FROM} WHERE e.event_id = %s", (event_id,))
        return events_of(rows)[0] if rows else None

    async def _load_snapshot(self, stream: StreamId) -> Snapshot | None:
        rows = await self._fetch(
            "SELECT `sequence`, `type`, schema_version, state, taken_at FROM snapshots "
            "WHERE tenant = %s AND domain = %s AND aggregate_id = %s",
            (stream.tenant, stream.domain, stream.aggregate_id),
        )
        if not rows:
            return None
        seq, stype, version, state, taken_at = rows[0]
        return Snapshot(stream, seq, stype, version, bytes(state), taken_at)

    async def _load_checkpoint(self, name: str, partition: int) -> Checkpoint | None:
        rows = await self._fetch(
            "SELECT commit_pos, index_pos, epoch, updated_at FROM checkpoints "
            "WHERE name = %s AND `partition` = %s",
            (name, partition),
        )
        if not rows:
            return None
        commit, index, epoch, updated_at = rows[0]
        return Checkpoint(name, partition, Position(commit, index), epoch, updated_at)

    async def _list_streams_page(
        self, domain: str | None, prefix: str | None, cursor: int | None, limit: int
    ) -> tuple[list[StreamInfo], int | None]:
        where = ["id > %s", "version >= 0"]
        args: list[Any] = [cursor or 0]
        if domain is not None:
            where.append("domain = %s")
            args.append(domain)
        if prefix:
            where.append("LEFT(aggregate_id, CHAR_LENGTH(%s)) = %s")
            args += [prefix, prefix]
        args.append(limit)
        rows = await self._fetch(
            "SELECT id, tenant, domain, aggregate_id, version FROM streams "
            f"WHERE {' AND '.join(where)} ORDER BY id LIMIT %s",
            args,
        )
        infos = [StreamInfo(StreamId(r[2], r[3], r[1]), r[4]) for r in rows]
        return infos, (rows[-1][0] if rows else None)


async def _rows(conn: asyncmy.Connection, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
    rows = (await run(conn, sql, args))[0].rows
    return rows or []
