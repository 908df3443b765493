"""The PostgreSQL transport's dead letters: the rows of the dead-letter queue's channel.

A dead letter is a row of ``transport_messages`` on channel ``q:<queue>`` (the consumer sent it
there); its handle is the row id. A page reads rows in id order with a body preview, so
browsing consumes nothing. A retry deletes the row and inserts the original message on the
channel of its group alone (``t:<topic>/<group>``, or ``q:<queue>``) in one transaction, then
notifies that channel: the topic's other groups never see it, and a second retry finds no row
(NotFound), so nothing is delivered twice. A row a consumer of the dead-letter queue holds
(its lease running) cannot be taken. Loaded by ``chronik.transports.dead_letters`` for
``postgresql://`` URLs; imports the PostgreSQL adapter.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chronik.errors import InvalidMessage
from chronik.store.postgres.errors import DRIVER_ERRORS, transport_unavailable
from chronik.transports.dead_letters import PREVIEW_BYTES, StoredDead, redelivery
from chronik.transports.message import Message
from chronik.transports.postgres import PostgresTransport

__all__ = ["PostgresDeadLetters"]

_WHAT = "PostgreSQL transport dead letters"
_json = msgspec.json.Encoder()
_headers = msgspec.json.Decoder(dict[str, str])
_COLUMNS = "id, message_id, key, headers"


class PostgresDeadLetters:
    """Dead letters of one ``PostgresTransport`` (see the module docstring)."""

    def __init__(self, transport: PostgresTransport) -> None:
        self.t = transport
        s = f'"{transport.schema}"'
        self._page_sql = (
            f"SELECT {_COLUMNS}, substring(body FROM 1 FOR {PREVIEW_BYTES}), length(body) "
            f"FROM {s}.transport_messages WHERE channel = $1 AND id > $2 ORDER BY id LIMIT $3"
        )
        self._get_sql = (
            f"SELECT {_COLUMNS}, body, length(body) FROM {s}.transport_messages "
            "WHERE channel = $1 AND id = $2"
        )
        self._take_sql = (
            f"DELETE FROM {s}.transport_messages WHERE channel = $1 AND id = $2 "
            f"AND locked_until <= now() RETURNING {_COLUMNS}, body, length(body)"
        )
        self._insert_sql = (
            f"INSERT INTO {s}.transport_messages (channel, message_id, topic, key, headers, body) "
            "VALUES ($1, $2, $3, $4, $5, $6)"
        )
        self._notify_sql = f"SELECT pg_notify('{transport.notify_channel}', $1)"

    async def page(self, queue: str, after: str | None, limit: int) -> list[StoredDead]:
        start = -1 if after is None else _row_id(after, "after")
        rows = await self._fetch(self._page_sql, f"q:{queue}", start, limit)
        return [_stored(queue, r) for r in rows]

    async def get(self, queue: str, handle: str) -> StoredDead | None:
        rows = await self._fetch(self._get_sql, f"q:{queue}", _row_id(handle, "id"))
        return _stored(queue, rows[0]) if rows else None

    async def take(self, queue: str, handle: str, retry: bool) -> StoredDead | None:
        row_id = _row_id(handle, "id")
        await self.t._ready()
        try:
            async with self.t.pool().connection() as conn, conn.transaction():
                row = await conn.fetchrow(self._take_sql, f"q:{queue}", row_id)
                if row is None:
                    return None
                stored = _stored(queue, row)
                if retry:
                    again = redelivery(stored)  # raises (rolls back) when it names no topic
                    m = again.message
                    channel = f"t:{m.topic}/{again.group}" if again.group else f"q:{m.topic}"
                    headers = _json.encode(m.headers).decode()
                    await conn.execute(
                        self._insert_sql, channel, m.id, m.topic, m.key, headers, m.body
                    )
                    await conn.execute(self._notify_sql, channel)  # sent at commit
                return stored
        except DRIVER_ERRORS as exc:
            raise transport_unavailable(_WHAT, exc, unknown=True) from exc

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        await self.t._ready()
        try:
            return await self.t.pool().fetch(sql, *args)
        except DRIVER_ERRORS as exc:
            raise transport_unavailable(_WHAT, exc) from exc


def _stored(queue: str, row: Any) -> StoredDead:
    message = Message(
        topic=queue, body=bytes(row[4]), id=row[1], headers=_headers.decode(row[3]), key=row[2]
    )
    return StoredDead(str(row[0]), message, row[5])


def _row_id(handle: str, field: str) -> int:
    if not handle.isdigit() or len(handle) > 18:
        raise InvalidMessage(f"invalid dead letter id {handle!r}: a row id", field=field)
    return int(handle)
