"""Writing one unit of work in an LMDB write transaction: every check, then every write.

Plain functions over a transaction; the writer (``commit``) calls them and aborts the
transaction on whatever they raise, so a unit is written whole or not at all. The state they
read is the transaction's: the store before the unit, plus the unit's own earlier appends.
"""

from __future__ import annotations

from typing import Final

from chronik.errors import CheckpointFenced, WrongExpectedVersion
from chronik.messages import JSON, AppendResult, Position, StreamId
from chronik.store.lmdb.dcb import check_unit
from chronik.store.lmdb.keys import (
    Dbs,
    Txn,
    checkpoint_key,
    checkpoint_value,
    decode,
    encode,
    event_record,
    fetch,
    num,
    snapshot_value,
    stream_key,
    stream_value,
    tag_key,
    type_key,
    unnum,
    unpack_stream,
)
from chronik.store.lmdb.tables import write_leases, write_tables
from chronik.store.records import (
    AppendRequest,
    FaultHook,
    PreparedEvent,
    StoredEvent,
    WriteUnit,
    check_expected,
    match_duplicate,
)

__all__ = ["write_unit"]

_EMPTY: Final = b""


def write_unit(
    txn: Txn, dbs: Dbs, unit: WriteUnit, now: int, hook: FaultHook | None = None
) -> list[AppendResult]:
    """Check and write one unit in ``txn``; raises what refuses it (the caller aborts)."""
    if hook is not None and unit.checkpoints:
        hook("checkpoint", unit)
    cps = dbs["checkpoints"]
    for cp in unit.checkpoints:
        old = txn.get(checkpoint_key(cp.name, cp.partition), db=cps)
        if old is not None and (stored := decode(old)[2]) > cp.epoch:
            raise CheckpointFenced(cp.name, cp.partition, cp.epoch, stored)
    if unit.expects or unit.conditions:
        check_unit(txn, dbs, unit)
    if unit.tables or unit.leases:
        if hook is not None:
            hook("tables", unit)
        write_tables(txn, dbs, unit.tables)
        write_leases(txn, dbs, unit.leases)
    for cp in unit.checkpoints:
        txn.put(checkpoint_key(cp.name, cp.partition), checkpoint_value(cp, now), db=cps)
    if hook is not None and unit.snapshots:
        hook("snapshot", unit)
    snaps = dbs["snapshots"]
    for snap in unit.snapshots:
        key = stream_key(snap.stream)
        old = txn.get(key, db=snaps)
        if old is None or decode(old)[0] <= snap.sequence:
            txn.put(key, snapshot_value(snap), db=snaps)
    results = []
    for req in unit.appends:
        if hook is not None:
            hook("append", unit)
        results.append(_append(txn, dbs, req, now))
    return results


def _last(txn: Txn, db: object) -> int:
    """The greatest number keying ``db`` (0 when empty)."""
    cur = txn.cursor(db=db)  # type: ignore[arg-type]
    return unnum(cur.key()) if cur.last() else 0


def _append(txn: Txn, dbs: Dbs, req: AppendRequest, now: int) -> AppendResult:
    stream = req.stream
    events = req.events
    ids = dbs["event_ids"]
    id_keys = [e.event_id.encode() for e in events]
    if any(txn.get(k, db=ids) is not None for k in id_keys):
        return _duplicate(txn, dbs, req, id_keys)
    skey = stream_key(stream)
    streams = dbs["streams"]
    raw = txn.get(skey, db=streams)
    if raw is None:
        actual: int | None = None
        stream_no = _last(txn, dbs["stream_nums"]) + 1
        txn.put(
            num(stream_no),
            encode((stream.domain, stream.aggregate_id, stream.tenant)),
            db=dbs["stream_nums"],
        )
    else:
        stream_no, actual = unpack_stream(raw)
    if not check_expected(req.expected, actual):
        raise WrongExpectedVersion(stream, req.expected, actual)
    first = 0 if actual is None else actual + 1
    log, stream_events, tags, types = dbs["log"], dbs["stream_events"], dbs["tags"], dbs["types"]
    first_pos = _last(txn, log) + 1
    prefix = num(stream_no)
    for i, e in enumerate(events):
        pos = num(first_pos + i)
        txn.put(pos, event_record(e, stream_no, first + i, now), db=log, append=True)
        txn.put(prefix + num(first + i), pos, db=stream_events)
        txn.put(id_keys[i], pos, db=ids)
        txn.put(type_key(e.type) + pos, _EMPTY, db=types)
        for tag in e.tags:  # indexed in the same transaction as the event
            txn.put(tag_key(tag) + pos, _EMPTY, db=tags)
    last = first + len(events) - 1
    txn.put(skey, stream_value(stream_no, last), db=streams)
    positions = tuple(Position(first_pos + i) for i in range(len(events)))
    return AppendResult(stream, first, last, positions[-1], positions, now)


def _duplicate(txn: Txn, dbs: Dbs, req: AppendRequest, id_keys: list[bytes]) -> AppendResult:
    """The original result of a retried append, or DuplicateEventError (``match_duplicate``)."""
    stored = []
    names: dict[int, StreamId] = {}
    for key in id_keys:
        pos = txn.get(key, db=dbs["event_ids"])
        if pos is None:
            continue
        eid, no, seq, etype, sv, payload, md, ct, at, tg = decode(fetch(txn, pos, dbs["log"]))
        if no not in names:
            domain, aggregate_id, tenant = decode(fetch(txn, num(no), dbs["stream_nums"]))
            names[no] = StreamId(domain, aggregate_id, tenant)
        old = PreparedEvent(eid, etype, sv, payload, md, ct or JSON, tuple(tg or ()))
        stored.append(StoredEvent(old, names[no], seq, Position(unnum(pos)), at))
    return match_duplicate(req, stored)
