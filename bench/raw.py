"""The raw baselines: plain sqlite3 doing the same work as chronik on the same schema.

Each is the fastest plain-driver code we know for that work: statements reused from sqlite3's
statement cache, one ``executemany`` per batch of rows, the optimistic-concurrency check folded
into the version update, WAL checkpoints on a background thread once the connection writes (as
chronik's store does: no commit pays for one), payloads decoded into the same builtins (dicts)
that ``RecordedEvent.json()`` returns by ``loads`` (orjson.loads or msgspec.json.decode,
whichever is faster on this machine, timed at import), and no per-row Python object beyond
the row tuple the driver hands out.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from chronik.store.sqlite.schema import MIGRATIONS, SCHEMA_VERSION

INSERT_EVENT = (
    "INSERT INTO chronik_events (stream_id, sequence, event_id, type, schema_version, payload, "
    "metadata, content_type, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
NEW_STREAM = (
    "INSERT INTO chronik_streams (tenant, domain, aggregate_id, version) "
    "VALUES ('', 'bench', ?, ?) ON CONFLICT DO NOTHING RETURNING id"
)
BUMP_VERSION = (
    "UPDATE chronik_streams SET version = ? WHERE tenant = '' AND domain = 'bench' "
    "AND aggregate_id = ? AND version = ? RETURNING id"
)
# The columns chronik reads for a RecordedEvent (chronik.store.sqlite.read), without the
# stream id when the stream is known.
COLS = (
    "position, stream_id, sequence, event_id, type, schema_version, payload, metadata, "
    "content_type, recorded_at"
)
STREAM_COLS = (
    "event_id, sequence, type, schema_version, payload, position, recorded_at, metadata, "
    "content_type"
)
PAGE = 1000


CHECKPOINT_EVERY = 0.05  # seconds between two background PASSIVE checkpoints


def _pick_loads() -> tuple[str, Callable[[bytes], Any]]:
    """orjson.loads or msgspec.json.decode, whichever decodes bench-like payloads faster here
    (both give the same dict): interleaved, best of 15 rounds of 500 payloads."""
    sample = [
        orjson.dumps({"customer": f"cust-{i}", "amount": i, "note": "some text for the line"})
        for i in range(500)
    ]
    candidates: dict[str, Callable[[bytes], Any]] = {
        "orjson.loads": orjson.loads,
        "msgspec.json.decode": msgspec.json.decode,
    }
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(15):
        for name, decode in candidates.items():
            start = time.perf_counter()
            for b in sample:
                decode(b)
            best[name] = min(best[name], time.perf_counter() - start)
    name = min(best, key=best.__getitem__)
    return name, candidates[name]


LOADS_NAME, loads = _pick_loads()


def _checkpoint_loop(path: str, stop: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    while not stop.wait(CHECKPOINT_EVERY):
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    conn.close()


class RawConnection(sqlite3.Connection):
    """A connection whose WAL a background thread checkpoints once it writes; close() stops
    the thread (then the last close checkpoints, as sqlite3 always does)."""

    _checkpointer: threading.Thread | None = None
    _stop: threading.Event | None = None

    def start_checkpoints(self) -> None:
        """Turn auto-checkpoints off and checkpoint every CHECKPOINT_EVERY s on a thread."""
        if self._checkpointer is None:
            self.execute("PRAGMA wal_autocheckpoint = 0")
            path = self.execute("PRAGMA database_list").fetchone()[2]
            self._stop = threading.Event()
            self._checkpointer = threading.Thread(
                target=_checkpoint_loop, args=(path, self._stop), daemon=True
            )
            self._checkpointer.start()

    def close(self) -> None:
        if self._checkpointer is not None and self._stop is not None:
            self._stop.set()
            self._checkpointer.join()
            self._checkpointer = None
        super().close()


def connect(path: str) -> RawConnection:
    """A WAL, synchronous=NORMAL connection with chronik's tables and indexes."""
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=256, factory=RawConnection)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS chronik_schema (version INTEGER NOT NULL)")
    if not conn.execute("SELECT 1 FROM chronik_schema").fetchone():
        for version in range(1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute("INSERT INTO chronik_schema VALUES (?)", (SCHEMA_VERSION,))
    return conn


def append(
    conn: sqlite3.Connection, aggregate_id: str, payloads: list[Any], expected: int | None
) -> int:
    """One append call of payloads encoded here (orjson); see ``append_encoded``."""
    return append_encoded(conn, aggregate_id, [orjson.dumps(p) for p in payloads], expected)


def append_encoded(
    conn: sqlite3.Connection, aggregate_id: str, payloads: list[bytes], expected: int | None
) -> int:
    """One append call in one transaction: create the stream (expected None) or move its
    version from ``expected`` to the new last sequence (the expectation check), insert the
    events (one ``execute``, or one ``executemany`` for a batch), commit. Returns the last
    sequence. The first append starts the connection's background checkpoints."""
    if isinstance(conn, RawConnection):
        conn.start_checkpoints()
    first = 0 if expected is None else expected + 1
    last = first + len(payloads) - 1
    conn.execute("BEGIN IMMEDIATE")
    if expected is None:
        row = conn.execute(NEW_STREAM, (aggregate_id, last)).fetchone()
    else:
        row = conn.execute(BUMP_VERSION, (last, aggregate_id, expected)).fetchone()
    if row is None:
        conn.execute("ROLLBACK")
        raise RuntimeError(f"{aggregate_id}: expected {expected}, found another version")
    stream_id = row[0]
    now = time.time_ns() // 1000
    if len(payloads) == 1:
        event_id = os.urandom(16).hex()
        conn.execute(
            INSERT_EVENT,
            (stream_id, first, event_id, "bench.event", 1, payloads[0], None, None, now),
        )
    else:
        conn.executemany(
            INSERT_EVENT,
            [
                (stream_id, first + i, os.urandom(16).hex(), "bench.event", 1, p, None, None, now)
                for i, p in enumerate(payloads)
            ],
        )
    conn.execute("COMMIT")
    return last


def read_stream(conn: sqlite3.Connection, aggregate_id: str) -> int:
    """Look the stream up, read its events in pages of 1,000 as chronik does (the columns a
    RecordedEvent of a known stream needs), decode each payload to a dict with ``loads``;
    returns the count."""
    (sid,) = conn.execute(
        "SELECT id FROM chronik_streams WHERE tenant = '' AND domain = 'bench' "
        "AND aggregate_id = ?",
        (aggregate_id,),
    ).fetchone()
    sql = (
        f"SELECT {STREAM_COLS} FROM chronik_events WHERE stream_id = ? AND sequence >= ? "
        "ORDER BY sequence LIMIT ?"
    )
    count, cursor, decode = 0, 0, loads
    while True:
        rows = conn.execute(sql, (sid, cursor, PAGE)).fetchall()
        for r in rows:
            decode(r[4])
        count += len(rows)
        if len(rows) < PAGE:
            return count
        cursor = rows[-1][1] + 1


def read_all(conn: sqlite3.Connection) -> int:
    """Read every event (the columns chronik reads) in pages of 1,000 by position and decode
    each payload to a dict with ``loads``; returns the count."""
    sql = f"SELECT {COLS} FROM chronik_events WHERE position > ? ORDER BY position LIMIT ?"
    count, after, decode = 0, 0, loads
    while True:
        rows = conn.execute(sql, (after, PAGE)).fetchall()
        if not rows:
            return count
        for r in rows:
            decode(r[6])
        count += len(rows)
        after = rows[-1][0]
