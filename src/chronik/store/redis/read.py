"""The read side of the Redis store: every page in one round trip (a read script, or a plain
command), driver errors translated by ``errors``.

Commit order is position order (positions are taken inside the write script, which Redis
runs alone), so a reader never passes an event that could still appear before it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import redis.asyncio
import redis.exceptions

from chronik.dcb import Query
from chronik.messages import Checkpoint, Position, RecordedEvent, Snapshot, StreamId, StreamInfo
from chronik.store.records import FaultHook, PreparedEvent, StoredEvent
from chronik.store.redis.codec import StreamCache, decode_event, decode_snapshot, stream_key
from chronik.store.redis.errors import read_failed
from chronik.store.redis.lua_read import (
    GET_EVENTS,
    LIST_STREAMS,
    READ_ALL,
    READ_QUERY,
    READ_STREAM,
)
from chronik.store.redis.scripts import Script, command
from chronik.store.redis.write import after_bound, before_bound, query_args

__all__ = ["RedisReader"]

_READ_ALL: Final = Script("read_all", READ_ALL)
_READ_QUERY: Final = Script("read_query", READ_QUERY)
_READ_STREAM: Final = Script("read_stream", READ_STREAM)
_GET_EVENTS: Final = Script("get_events", GET_EVENTS)
_LIST_STREAMS: Final = Script("list_streams", LIST_STREAMS)
T = TypeVar("T")


class RedisReader:
    """Reads pages of events and streams, snapshots and checkpoints."""

    url: str
    prefix: str
    fault_hook: FaultHook | None
    _client: redis.asyncio.Redis

    def _init_reader(self) -> None:
        self._streams = StreamCache()

    def key(self, name: str) -> str:
        """The full name of one of the store's keys."""
        return f"{self.prefix}:{name}"

    async def _run(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            if self.fault_hook is not None:
                self.fault_hook("fetch", None)
            try:
                return await call()
            except redis.exceptions.ConnectionError:  # a pooled connection the server dropped
                return await call()  # reads change nothing: once more, on a new connection
        except BaseException as exc:
            error = read_failed(self.url, exc)
            if error is exc:
                raise
            raise error from exc

    async def _script(self, script: Script, *args: Any) -> Any:
        return await self._run(lambda: script(self._client, [self.prefix, *args]))

    def _events(self, flat: Sequence[bytes]) -> list[RecordedEvent]:
        streams = self._streams
        return [decode_event(flat[i], flat[i + 1], streams)[0] for i in range(0, len(flat), 2)]

    async def _stream_version(self, stream: StreamId) -> int | None:
        length = await self._run(
            lambda: command(self._client, "LLEN", self.key(f"s:{stream_key(stream)}"))
        )
        return None if not length else int(length) - 1

    async def _head(self) -> Position | None:
        seq = await self._run(lambda: command(self._client, "GET", self.key("seq")))
        return None if seq is None or int(seq) == 0 else Position(int(seq))

    async def _read_stream_page(
        self, stream: StreamId, from_sequence: int | None, backward: bool, limit: int
    ) -> list[RecordedEvent]:
        start = "" if from_sequence is None else from_sequence
        flat = await self._script(_READ_STREAM, stream_key(stream), start, int(backward), limit)
        return self._events(flat)

    async def _read_all_page(
        self,
        after: Position | None,
        before: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        limit: int,
        backward: bool,
    ) -> list[RecordedEvent]:
        if (domains is not None and not domains) or (types is not None and not types):
            return []  # an empty filter matches nothing
        d, t = domains or (), types or ()
        flat = await self._script(
            _READ_ALL,
            after_bound(after),
            before_bound(before),
            int(backward),
            limit,
            len(t),
            *t,
            len(d),
            *d,
        )
        return self._events(flat)

    async def _read_query_page(
        self, query: Query, cursor: Position | None, limit: int, backward: bool
    ) -> list[RecordedEvent]:
        after, before = (None, cursor) if backward else (cursor, None)
        flat = await self._script(
            _READ_QUERY,
            after_bound(after),
            before_bound(before),
            int(backward),
            limit,
            *query_args(query),
        )
        return self._events(flat)

    async def _get_event(self, event_id: str) -> RecordedEvent | None:
        flat = await self._script(_GET_EVENTS, 1, event_id)
        return self._events(flat)[0] if flat[0] else None

    async def _stored(self, ids: Sequence[str]) -> list[StoredEvent]:
        """The stored events among ``ids``, in that order (a retried append's originals)."""
        flat = await self._script(_GET_EVENTS, len(ids), *ids)
        out = []
        for i in range(0, len(flat), 2):
            if flat[i]:
                rec, prepared = decode_event(flat[i], flat[i + 1], self._streams)
                out.append(_stored_event(rec, prepared))
        return out

    async def _list_streams_page(
        self, domain: str | None, prefix: str | None, cursor: int | None, limit: int
    ) -> tuple[list[StreamInfo], int | None]:
        flat = await self._script(_LIST_STREAMS, domain or "", prefix or "", cursor or 0, limit)
        infos = []
        for i in range(0, len(flat), 3):
            tenant, domain_, aggregate_id = flat[i + 1].decode().split("/", 2)
            stream = self._streams.get(tenant, domain_, aggregate_id)
            infos.append(StreamInfo(stream, int(flat[i + 2]) - 1))
        return infos, (int(float(flat[-3])) if flat else None)

    async def _load_snapshot(self, stream: StreamId) -> Snapshot | None:
        record = await self._run(
            lambda: command(self._client, "HGET", self.key("snapshots"), stream_key(stream))
        )
        return None if record is None else decode_snapshot(stream, record)

    async def _load_checkpoint(self, name: str, partition: int) -> Checkpoint | None:
        value = await self._run(
            lambda: command(self._client, "HGET", self.key("checkpoints"), f"{partition} {name}")
        )
        if value is None:
            return None
        commit, index, epoch, updated_at = value.split()
        return Checkpoint(
            name, partition, Position(int(commit), int(index)), int(epoch), int(updated_at)
        )


def _stored_event(rec: RecordedEvent, prepared: PreparedEvent) -> StoredEvent:
    return StoredEvent(prepared, rec.stream, rec.sequence, rec.position, rec.recorded_at_us)
