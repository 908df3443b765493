"""Writing units of work on the SQLite writer connection, inside the batch's transaction.

Plain functions over a connection; the group commit (``commit``) calls them and nothing here
calls back into the store. Each unit of a batch of several runs in a savepoint, so whatever it
raises fails that unit alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from typing import Final

from chronik.errors import CheckpointFenced, StreamDeleted, WrongExpectedVersion
from chronik.messages import JSON, AppendResult, Position, StreamId
from chronik.store.base import (
    AppendRequest,
    FaultHook,
    PreparedEvent,
    StoredEvent,
    WriteUnit,
    check_expected,
    match_duplicate,
)
from chronik.store.sqlite.dcb import INSERT_TAG, check_unit, split_tags, tag_rows
from chronik.store.sqlite.errors import refused_table_write, unit_failed
from chronik.store.sqlite.leases import write_leases
from chronik.store.sqlite.read import SELECT_STREAM
from chronik.store.sqlite.tables import write_tables

__all__ = ["Outcome", "Pending", "StreamIds", "find_duplicate", "write_unit", "write_units"]

Outcome = list[AppendResult] | BaseException
#: the writer's stream ids by (tenant, domain, aggregate id), as it last saw them: a hint that
#: the short append checks (the row of the id must still be the stream's), never trusted alone
StreamIds = dict[tuple[str, str, str], int]
_MAX_STREAM_IDS: Final = 100_000  # then forgotten at once (a stale or missing id costs a read)
# a unit and its caller's future (None: written straight through, on the caller's task)
Pending = tuple[WriteUnit, "asyncio.Future[list[AppendResult]] | None"]

_INSERT_EVENT: Final = (
    "INSERT INTO chronik_events (stream_id, sequence, event_id, type, schema_version, payload, "
    "metadata, content_type, recorded_at, tags, tenant) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_NEW_STREAM: Final = (
    "INSERT INTO chronik_streams (tenant, domain, aggregate_id, version) VALUES (?, ?, ?, ?)"
)
_SET_VERSION: Final = "UPDATE chronik_streams SET version = ? WHERE id = ?"
# the common append (one untagged event, an exact expectation, a stream id the writer saw):
# the version checked and moved by one statement on the row of that id if it is still the
# stream's, the event inserted by the next; no row moved (another version, a deleted stream,
# an id gone stale): the general way finds out why, in the same transaction
_MOVE_VERSION: Final = (
    "UPDATE chronik_streams SET version = ? WHERE id = ? AND tenant = ? AND domain = ? "
    "AND aggregate_id = ? AND version = ? AND truncate_before <= ? AND tombstone = 0"
)
# sqlite3 binds int, float, str and bytearray straight, and looks for an adapter for anything
# else (bytes, None: two failed attribute lookups each); so the blobs go as bytearray (the same
# BLOB) and a missing metadata or content type as NULL in the statement: (no md, no ct) -> SQL
_INSERT_MOVED: Final = {
    (no_md, no_ct): "INSERT INTO chronik_events (stream_id, sequence, event_id, type, "
    "schema_version, payload, metadata, content_type, recorded_at, tags, tenant) VALUES ("
    f"?, ?, ?, ?, ?, ?, {'NULL' if no_md else '?'}, {'NULL' if no_ct else '?'}, ?, NULL, ?)"
    for no_md in (False, True)
    for no_ct in (False, True)
}
# a WriteUnit's fields after ``appends`` when it holds nothing else (as made by the store's
# append methods; any other empty sequences take the general way, to the same effect)
_APPENDS_ONLY: Final[tuple[object, ...]] = ([], [], (), (), (), (), ())
_CHECKPOINT_EPOCH: Final = "SELECT epoch FROM chronik_checkpoints WHERE name = ? AND partition = ?"
_CHECKPOINT: Final = (
    "INSERT OR REPLACE INTO chronik_checkpoints (name, partition, commit_pos, "
    "index_pos, epoch, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
)
_SNAPSHOT: Final = (
    "INSERT INTO chronik_snapshots (tenant, domain, aggregate_id, sequence, type, "
    "schema_version, state, taken_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tenant, domain, aggregate_id) DO UPDATE SET "
    "sequence = excluded.sequence, type = excluded.type, "
    "schema_version = excluded.schema_version, state = excluded.state, "
    "taken_at = excluded.taken_at WHERE excluded.sequence >= sequence"
)


def write_units(
    conn: sqlite3.Connection,
    batch: Sequence[Pending],
    path: str,
    hook: FaultHook | None,
    ids: StreamIds | None = None,
) -> list[Outcome]:
    """Write each unit of ``batch`` (in the caller's transaction): its results or its error.

    A unit whose caller gave up is skipped. With one unit and no savepoint, its error is the
    only outcome and the caller rolls back. ``ids``: the writer's stream ids (``StreamIds``).
    """
    now = time.time_ns() // 1000
    if len(batch) == 1:  # no savepoint: its error is the only outcome, the caller rolls back
        unit, fut = batch[0]
        if fut is not None and fut.cancelled():  # its caller gave up: skip it
            return [asyncio.CancelledError()]
        try:
            return [write_unit(conn, unit, now, hook, ids)]
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            return [unit_failed(path, exc)]
    outcomes: list[Outcome] = []
    for unit, fut in batch:  # each in a savepoint: whatever it raises fails it alone
        if fut is not None and fut.cancelled():  # its caller gave up before it was written: skip it
            outcomes.append(asyncio.CancelledError())
            continue
        conn.execute("SAVEPOINT unit")
        try:
            outcomes.append(write_unit(conn, unit, now, hook, ids))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            conn.execute("ROLLBACK TO unit")
            outcomes.append(unit_failed(path, exc))
        conn.execute("RELEASE unit")
    return outcomes


def write_unit(
    conn: sqlite3.Connection,
    unit: WriteUnit,
    now: int,
    hook: FaultHook | None = None,
    ids: StreamIds | None = None,
) -> list[AppendResult]:
    """Write one unit's checkpoints, tables, snapshots and appends, after its checks (stream
    expectations, DCB conditions); raises what refuses it."""
    if hook is None and unit[1:] == _APPENDS_ONLY:  # the common unit: nothing but appends
        appends = unit.appends
        if len(appends) == 1:
            return [_append(conn, appends[0], now, ids)]
        return [_append(conn, req, now, ids) for req in appends]
    if hook is not None and unit.checkpoints:
        hook("checkpoint", unit)
    for cp in unit.checkpoints:
        row = conn.execute(_CHECKPOINT_EPOCH, (cp.name, cp.partition)).fetchone()
        if row is not None and row[0] > cp.epoch:
            raise CheckpointFenced(cp.name, cp.partition, cp.epoch, row[0])
        conn.execute(
            _CHECKPOINT,
            (cp.name, cp.partition, cp.position.commit, cp.position.index, cp.epoch, now),
        )
    if unit.tables or unit.leases:
        if hook is not None:
            hook("tables", unit)
        try:
            write_tables(conn, unit.tables)
            write_leases(conn, unit.leases)
        except (sqlite3.Error, OverflowError, ValueError) as exc:  # a value it cannot bind
            error = refused_table_write(exc)
            if error is None:
                raise
            raise error from exc
    if hook is not None and unit.snapshots:
        hook("snapshot", unit)
    for snap in unit.snapshots:
        st = snap.stream
        conn.execute(
            _SNAPSHOT,
            (
                st.tenant,
                st.domain,
                st.aggregate_id,
                snap.sequence,
                snap.type,
                snap.schema_version,
                snap.state,
                snap.taken_at_us,
            ),
        )
    if unit.expects or unit.conditions:
        check_unit(conn, unit)
    results = []
    deleting = {d.append: d.hard for d in unit.deletes} if unit.deletes else None
    for i, req in enumerate(unit.appends):
        if hook is not None:
            hook("append", unit)
        results.append(_append(conn, req, now, ids))
        if deleting is not None and i in deleting:
            _delete(conn, results[-1], deleting[i])
    return results


def _delete(conn: sqlite3.Connection, done: AppendResult, hard: bool) -> None:
    """Hide the stream up to its deletion event ``done`` (and tombstone it when ``hard``),
    unless events came after the event (a delete retried after the stream started again)."""
    st = done.stream
    changed = conn.execute(
        "UPDATE chronik_streams SET truncate_before = ?, tombstone = max(tombstone, ?) "
        "WHERE tenant = ? AND domain = ? AND aggregate_id = ? AND version = ?",
        (
            done.last_sequence + 1,
            int(hard),
            st.tenant,
            st.domain,
            st.aggregate_id,
            done.last_sequence,
        ),
    ).rowcount
    if changed:  # the snapshot is a state of what is gone now
        conn.execute(
            "DELETE FROM chronik_snapshots WHERE tenant = ? AND domain = ? AND aggregate_id = ?",
            (st.tenant, st.domain, st.aggregate_id),
        )


def _append(
    conn: sqlite3.Connection, req: AppendRequest, now: int, ids: StreamIds | None = None
) -> AppendResult:
    stream = req.stream
    expected = req.expected
    last = len(req.events) - 1
    key = (stream.tenant, stream.domain, stream.aggregate_id)
    if ids is not None and type(expected) is int and not last and not req.events[0].tags:
        stream_id = ids.get(key)
        if stream_id is not None:
            done = _append_one(conn, req, now, stream_id, key, expected)
            if done is not None:
                return done
    row = conn.execute(SELECT_STREAM, key).fetchone()
    if row is not None and row[3]:
        raise StreamDeleted(stream)
    stored: int | None = None if row is None else row[1]  # the last sequence, shown or not
    actual = None if stored is None or stored < row[2] else stored
    if not check_expected(expected, actual):
        dup = find_duplicate(conn, req)
        if dup is None:
            raise WrongExpectedVersion(stream, expected, actual)
        return dup
    if stored is None:
        new_id = conn.execute(_NEW_STREAM, (*key, last)).lastrowid
        assert new_id is not None
        _remember(ids, key, new_id)
        return _insert(conn, req, now, new_id, 0, None)
    _remember(ids, key, row[0])
    conn.execute(_SET_VERSION, (stored + 1 + last, row[0]))
    return _insert(conn, req, now, row[0], stored + 1, stored)


def _remember(ids: StreamIds | None, key: tuple[str, str, str], stream_id: int) -> None:
    if ids is not None:
        if len(ids) >= _MAX_STREAM_IDS:
            ids.clear()
        ids[key] = stream_id


def _append_one(
    conn: sqlite3.Connection,
    req: AppendRequest,
    now: int,
    stream_id: int,
    key: tuple[str, str, str],
    expected: int,
) -> AppendResult | None:
    """The common append (one untagged event, exact expectation) in two statements; None
    (nothing written) unless the row of ``stream_id`` is the stream's and shows ``expected``
    as its last event."""
    seq = expected + 1
    if conn.execute(_MOVE_VERSION, (seq, stream_id, *key, expected, expected)).rowcount != 1:
        return None
    e = req.events[0]
    row: tuple[object, ...] = (
        stream_id,
        seq,
        e.event_id,
        e.type,
        e.schema_version,
        bytearray(e.payload),
    )
    md, json = e.metadata, e.content_type == JSON
    if md is not None:
        row += (bytearray(md),)
    if not json:
        row += (e.content_type,)
    try:
        pos = conn.execute(_INSERT_MOVED[md is None, json], (*row, now, key[0])).lastrowid
    except sqlite3.IntegrityError as exc:
        if "event_id" not in str(exc):
            raise
        # the event id is stored: undo the version, then a retry's result or a real duplicate
        conn.execute(_SET_VERSION, (expected, stream_id))
        return _stored(conn, req, exc)
    assert pos is not None
    position = Position(pos)
    return AppendResult(req.stream, seq, seq, position, (position,), now)


def _insert(
    conn: sqlite3.Connection,
    req: AppendRequest,
    now: int,
    stream_id: int,
    first: int,
    before: int | None,
) -> AppendResult:
    """Insert the events of ``req`` from sequence ``first``, the stream's version already moved
    to their last from ``before`` (None: the stream's row was just made)."""
    stream = req.stream
    events = req.events
    try:
        if len(events) == 1:
            last_pos = conn.execute(
                _INSERT_EVENT, _row(stream_id, first, events[0], now, stream.tenant)
            ).lastrowid
        else:
            conn.executemany(
                _INSERT_EVENT,
                [_row(stream_id, first + i, e, now, stream.tenant) for i, e in enumerate(events)],
            )
            last_pos = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    except sqlite3.IntegrityError as exc:
        if "event_id" not in str(exc):
            raise
        # An event id is already stored: undo this request's rows and version, then either
        # it is a retry of a stored append (return its result) or a real duplicate.
        conn.execute(
            "DELETE FROM chronik_events WHERE stream_id = ? AND sequence >= ?",
            (stream_id, first),
        )
        if before is None:
            conn.execute("DELETE FROM chronik_streams WHERE id = ?", (stream_id,))
        else:
            conn.execute(_SET_VERSION, (before, stream_id))
        return _stored(conn, req, exc)
    assert last_pos is not None
    if len(events) == 1:
        if events[0].tags:  # indexed in the same transaction as the event
            conn.executemany(INSERT_TAG, tag_rows(events, last_pos))
        position = Position(last_pos)
        return AppendResult(stream, first, first, position, (position,), now)
    # One transaction, one writer: the rows of one request take consecutive rowids.
    first_pos = last_pos - len(events) + 1
    if any(e.tags for e in events):  # indexed in the same transaction as the events
        conn.executemany(INSERT_TAG, tag_rows(events, first_pos))
    positions = tuple(Position(p) for p in range(first_pos, last_pos + 1))
    return AppendResult(stream, first, first + len(events) - 1, positions[-1], positions, now)


def _stored(conn: sqlite3.Connection, req: AppendRequest, exc: Exception) -> AppendResult:
    """After an insert refused for a stored event id (its writes undone): the stored append's
    result if ``req`` retries it (``find_duplicate``: DuplicateEventError if it only partly
    matches); ``exc`` raised again if no event of ``req`` is found."""
    dup = find_duplicate(conn, req)
    if dup is None:  # pragma: no cover - the index said it exists
        raise exc
    return dup


def _row(
    stream_id: int, sequence: int, e: PreparedEvent, now: int, tenant: str
) -> tuple[int, int, str, str, int, bytes, bytes | None, str | None, int, str | None, str]:
    return (
        stream_id,
        sequence,
        e.event_id,
        e.type,
        e.schema_version,
        e.payload,
        e.metadata,
        None if e.content_type == JSON else e.content_type,
        now,
        " ".join(e.tags) if e.tags else None,  # read back by dcb.split_tags
        tenant,  # the stream's, for reads of one tenant (schema 9)
    )


def find_duplicate(conn: sqlite3.Connection, req: AppendRequest) -> AppendResult | None:
    """The original result of ``req`` if its event ids are stored (DuplicateEventError if
    they only partly match), else None."""
    ids = [e.event_id for e in req.events]
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        "SELECT e.event_id, e.type, e.schema_version, e.payload, e.metadata, e.content_type, "
        "s.tenant, s.domain, s.aggregate_id, e.sequence, e.position, e.recorded_at, e.tags "
        "FROM chronik_events e "
        f"JOIN chronik_streams s ON s.id = e.stream_id WHERE e.event_id IN ({marks})",
        ids,
    ).fetchall()
    if not rows:
        return None
    by_id = {r[0]: r for r in rows}
    stored = []
    for event_id in ids:
        r = by_id.get(event_id)
        if r is not None:
            old = PreparedEvent(r[0], r[1], r[2], r[3], r[4], r[5] or JSON, split_tags(r[12]))
            stream = StreamId(r[7], r[8], r[6])
            stored.append(StoredEvent(old, stream, r[9], Position(r[10]), r[11]))
    return match_duplicate(req, stored)
