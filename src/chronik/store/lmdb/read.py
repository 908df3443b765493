"""The read side of the LMDB store: bounded pages, each in one read transaction (an MVCC
snapshot that no writer blocks), on the event loop (a page of 1,000 events costs about a
millisecond; LMDB errors are translated by ``errors``)."""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Iterable, Iterator
from typing import Any, Final

import lmdb

from chronik.dcb import Query
from chronik.errors import StoreUnavailable
from chronik.messages import (
    JSON,
    Checkpoint,
    Position,
    RecordedEvent,
    Snapshot,
    StreamId,
    StreamInfo,
)
from chronik.store.lmdb.dcb import query_positions, scan
from chronik.store.lmdb.errors import read_failed
from chronik.store.lmdb.keys import (
    Dbs,
    Txn,
    checkpoint_key,
    checkpoint_of,
    decode,
    fetch,
    num,
    stream_key,
    type_key,
    unpack_stream,
)
from chronik.store.lmdb.tables import read_table
from chronik.store.records import FaultHook
from chronik.store.tables import Condition

__all__ = ["LmdbReader"]

_STREAM_CACHE_LIMIT: Final = 200_000
_TOP: Final = num(2**64 - 1)


class LmdbReader:
    """Reads pages of events, streams, snapshots, checkpoints and tables; caches the streams
    of stream numbers (they never change)."""

    path: str
    fault_hook: FaultHook | None
    _env: lmdb.Environment | None
    _dbs: Dbs

    def _init_reader(self) -> None:
        self._names: dict[int, StreamId] = {}

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Txn]:
        """A read transaction; lmdb errors become StoreUnavailable."""
        if self.fault_hook is not None:
            self.fault_hook("fetch", None)
        env = self._env
        if env is None:
            raise StoreUnavailable(f"{self.path} is not open")
        try:
            with env.begin() as txn:
                yield txn
        except lmdb.Error as exc:
            raise read_failed(self.path, exc) from exc

    def _stream(self, txn: Txn, no: int) -> StreamId:
        names = self._names
        stream = names.get(no)
        if stream is None:
            domain, aggregate_id, tenant = decode(fetch(txn, num(no), self._dbs["stream_nums"]))
            stream = StreamId(domain, aggregate_id, tenant)
            if len(names) >= _STREAM_CACHE_LIMIT:
                names.clear()
            names[no] = stream
        return stream

    def _events(self, txn: Txn, items: Iterable[tuple[bytes, bytes]]) -> list[RecordedEvent]:
        """RecordedEvents of (position key, log record) pairs."""
        names = self._names
        out = []
        for key, value in items:
            eid, no, seq, etype, sv, payload, md, ct, at, tg = decode(value)
            stream = names.get(no) or self._stream(txn, no)
            out.append(
                RecordedEvent(
                    eid,
                    stream,
                    seq,
                    etype,
                    sv,
                    payload,
                    Position(int.from_bytes(key, "big")),
                    at,
                    md,
                    ct or JSON,
                    () if tg is None else tuple(tg),
                )
            )
        return out

    # --- the reader hooks of chronik.store.read.StoreReader -----------------------------------

    async def _get_event(self, event_id: str) -> RecordedEvent | None:
        with self._reading() as txn:
            pos = txn.get(event_id.encode(), db=self._dbs["event_ids"])
            if pos is None:
                return None
            return self._events(txn, [(pos, fetch(txn, pos, self._dbs["log"]))])[0]

    async def _stream_version(self, stream: StreamId) -> int | None:
        with self._reading() as txn:
            raw = txn.get(stream_key(stream), db=self._dbs["streams"])
        return None if raw is None else int(unpack_stream(raw)[1])

    async def _head(self) -> Position | None:
        with self._reading() as txn:
            cur = txn.cursor(db=self._dbs["log"])
            return Position(int.from_bytes(cur.key(), "big")) if cur.last() else None

    async def _read_stream_page(
        self, stream: StreamId, from_sequence: int | None, backward: bool, limit: int
    ) -> list[RecordedEvent]:
        with self._reading() as txn:
            raw = txn.get(stream_key(stream), db=self._dbs["streams"])
            if raw is None:
                return []
            no = unpack_stream(raw)[0]
            self._names.setdefault(no, stream)
            prefix = num(no)
            cur = txn.cursor(db=self._dbs["stream_events"])
            positions: list[bytes] = []
            if backward:
                top = _TOP if from_sequence is None else num(from_sequence + 1)
                ok = cur.prev() if cur.set_range(prefix + top) else cur.last()
                walk = cur.iterprev(keys=True, values=True) if ok else iter(())
            else:
                ok = cur.set_range(prefix + num(from_sequence or 0))
                walk = cur.iternext(keys=True, values=True) if ok else iter(())
            for key, pos in walk:
                if key[:8] != prefix:
                    break
                positions.append(pos)
                if len(positions) == limit:
                    break
            if not positions:
                return []
            pairs = txn.cursor(db=self._dbs["log"]).getmulti(positions)
            return self._events(txn, pairs)

    def _walk_log(
        self, txn: Txn, lo: int | None, hi: int | None, backward: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """(position key, record) of the log in (``lo``, ``hi``), in order."""
        cur = txn.cursor(db=self._dbs["log"])
        if backward:
            found = cur.set_range(_TOP if hi is None else num(hi))
            if not (cur.prev() if found else cur.last()):
                return
            bound = -1 if lo is None else lo
            for key, value in cur.iterprev():
                if int.from_bytes(key, "big") <= bound:
                    return
                yield key, value
            return
        if not cur.set_range(num(0 if lo is None else lo + 1)):
            return
        if hi is None:
            yield from cur.iternext()
            return
        for key, value in cur.iternext():
            if int.from_bytes(key, "big") >= hi:
                return
            yield key, value

    async def _read_all_page(
        self,
        after: Position | None,
        before: Position | None,
        domains: tuple[str, ...] | None,
        types: tuple[str, ...] | None,
        limit: int,
        backward: bool,
    ) -> list[RecordedEvent]:
        lo = None if after is None else after.commit
        hi = None if before is None else before.commit
        with self._reading() as txn:
            if types is None:
                pairs: Iterator[tuple[bytes, bytes]] = self._walk_log(txn, lo, hi, backward)
            else:
                pairs = self._typed(txn, types, lo, hi, backward)
            if domains is None:
                batch = []
                for pair in pairs:
                    batch.append(pair)
                    if len(batch) == limit:
                        break
                return self._events(txn, batch)
            out: list[RecordedEvent] = []
            for pair in pairs:
                event = self._events(txn, (pair,))[0]
                if event.stream.domain in domains:
                    out.append(event)
                    if len(out) == limit:
                        break
            return out

    def _typed(
        self, txn: Txn, types: tuple[str, ...], lo: int | None, hi: int | None, backward: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """(position key, record) of the events of ``types`` in (``lo``, ``hi``), in order."""
        walks = [scan(txn, self._dbs["types"], type_key(t), lo, hi, backward) for t in types]
        merged = walks[0] if len(walks) == 1 else heapq.merge(*walks, reverse=backward)
        log = self._dbs["log"]
        for p in merged:
            key = num(p)
            yield key, fetch(txn, key, log)

    async def _read_query_page(
        self, query: Query, cursor: Position | None, limit: int, backward: bool
    ) -> list[RecordedEvent]:
        after, before = (None, cursor) if backward else (cursor, None)
        lo = None if after is None else after.commit
        hi = None if before is None else before.commit
        with self._reading() as txn:
            found = query_positions(txn, self._dbs, query, lo, hi, limit, backward)
            if not found:
                return []
            pairs = txn.cursor(db=self._dbs["log"]).getmulti([num(p) for p in found])
            return self._events(txn, pairs)

    async def _list_streams_page(
        self, domain: str | None, prefix: str | None, cursor: int | None, limit: int
    ) -> tuple[list[StreamInfo], int | None]:
        out: list[StreamInfo] = []
        last: int | None = None
        with self._reading() as txn:
            cur = txn.cursor(db=self._dbs["stream_nums"])
            streams = self._dbs["streams"]
            if not cur.set_range(num((cursor or 0) + 1)):
                return out, None
            for key, value in cur.iternext():
                d, aggregate_id, tenant = decode(value)
                if (domain is None or d == domain) and (
                    not prefix or aggregate_id.startswith(prefix)
                ):
                    stream = StreamId(d, aggregate_id, tenant)
                    raw = txn.get(stream_key(stream), db=streams)
                    if raw is not None:
                        out.append(StreamInfo(stream, unpack_stream(raw)[1]))
                        last = int.from_bytes(key, "big")
                        if len(out) == limit:
                            break
        return out, last

    async def _load_snapshot(self, stream: StreamId) -> Snapshot | None:
        with self._reading() as txn:
            raw = txn.get(stream_key(stream), db=self._dbs["snapshots"])
        if raw is None:
            return None
        seq, stype, version, state, taken_at = decode(raw)
        return Snapshot(stream, seq, stype, version, state, taken_at)

    async def _load_checkpoint(self, name: str, partition: int) -> Checkpoint | None:
        with self._reading() as txn:
            raw = txn.get(checkpoint_key(name, partition), db=self._dbs["checkpoints"])
        return None if raw is None else checkpoint_of(name, partition, raw)

    async def _read_table(
        self,
        table: str,
        where: tuple[Condition, ...],
        order_by: tuple[tuple[str, bool], ...],
        limit: int | None,
        after: tuple[Any, ...] | None,
    ) -> list[dict[str, Any]]:
        with self._reading() as txn:
            return read_table(txn, self._dbs, table, where, order_by, limit, after)
