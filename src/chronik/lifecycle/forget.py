"""Forgetting a subject (crypto-shredding), audited, and compacting a SQLite file afterwards.

``forget_subject`` deletes the subject's key (``KeyRing.forget``) and appends the audit event
``chronik.subject_forgotten`` (who, why, whether a key was deleted; the store stamps when) to the
subject's stream ``chronik.subjects/<subject>``. From then on every copy of the subject's
personal fields is ciphertext without a key: events, outbox rows, transport messages in flight,
exports, archives. Copies chronik derived from opened values are cleaned by a sweep over the
events carrying the subject's envelopes: their streams' snapshots are dropped (a snapshot
taken without a key ring holds opened values) and the error texts of their projection dead
letters (and a projection's last error quoting them) are replaced (a handler's error may
quote a value). Read-model rows are made clean by a rebuild, which now writes the
placeholders; on SQLite ``compact_sqlite`` then rewrites the file (checkpoint, VACUUM,
checkpoint) so no free page or WAL frame keeps an old row or the key. The log line it writes
names the subject (an id, never personal itself) and the counts, never a value.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Final

import msgspec

from chronik.errors import (
    ConfigurationError,
    NotSupported,
    ReadModelError,
    StoreUnavailable,
    ValidationError,
)
from chronik.lifecycle.subject_keys import SUBJECTS_DOMAIN
from chronik.messages import EventData, StreamId
from chronik.personal.base import check_subject
from chronik.personal.keyring import KeyRing
from chronik.store.base import EventStore, TableWrite
from chronik.store.system_tables import DEAD_LETTERS, STATUS

__all__ = [
    "FORGOTTEN_EVENT",
    "ForgetReport",
    "compact_if_sqlite",
    "compact_sqlite",
    "forget_subject",
    "sqlite_path",
]

log = logging.getLogger("chronik.gdpr")
FORGOTTEN_EVENT: Final = "chronik.subject_forgotten"
#: what a scrubbed dead letter's error text becomes
SCRUBBED: Final = "[error text removed: its subject was forgotten]"


class ForgetReport(msgspec.Struct, frozen=True):
    """What ``forget_subject`` did: the key deleted (False: none was left) and the audit event."""

    subject: str
    key_deleted: bool
    by: str
    reason: str
    audit_event_id: str
    snapshots_dropped: int = 0
    dead_letters_scrubbed: int = 0


async def forget_subject(
    store: EventStore,
    keys: KeyRing,
    subject: str,
    *,
    by: str,
    reason: str = "",
    sweep: bool = True,
) -> ForgetReport:
    """Delete ``subject``'s key, sweep the derived copies (``sweep``: one pass over the
    events) and record who did it and why (idempotent: forgetting again deletes nothing and
    records another audit event)."""
    check_subject(subject)
    if not isinstance(by, str) or not by.strip():
        raise ValidationError("forgetting a subject needs who asks for it", field="by")
    deleted = await keys.forget(subject)
    dropped, scrubbed = await _sweep(store, subject) if sweep else (0, 0)
    audit = EventData(
        FORGOTTEN_EVENT,
        {
            "subject": subject,
            "by": by,
            "reason": reason,
            "key_deleted": deleted,
            "snapshots_dropped": dropped,
            "dead_letters_scrubbed": scrubbed,
        },
        {"actor": by},
    )
    await store.append(StreamId(SUBJECTS_DOMAIN, subject), [audit])
    log.info(
        "forgot subject %s (by %s): key deleted %s, %d snapshot(s) dropped, %d dead letter(s) "
        "scrubbed, audit event %s",
        subject,
        by,
        deleted,
        dropped,
        scrubbed,
        audit.event_id,
    )
    return ForgetReport(subject, deleted, by, reason, audit.event_id, dropped, scrubbed)


async def _sweep(store: EventStore, subject: str) -> tuple[int, int]:
    """Drop the snapshots of the streams with the subject's envelopes and scrub the error
    texts of their events' dead letters: (snapshots dropped, dead letters scrubbed)."""
    sealed = msgspec.json.encode({"$enc": "v1", "s": subject})[:-1]
    streams: set[StreamId] = set()
    event_ids: set[str] = set()
    async for event in store.read_all():
        if sealed in event.payload:
            streams.add(event.stream)
            event_ids.add(event.event_id)
    dropped = 0
    for stream in sorted(streams):
        try:
            dropped += await store.drop_snapshot(stream)
        except NotSupported:  # an adapter without it: its snapshots stay (documented)
            break
    try:
        rows = await store.read_table(DEAD_LETTERS.name)
        status = await store.read_table(STATUS.name)
    except (ReadModelError, ConfigurationError):
        return dropped, 0
    mine = [
        row
        for row in rows
        if row.get("event_id") in event_ids and row.get("error") not in (None, SCRUBBED)
    ]
    texts = {str(row["error"]) for row in mine}
    key = ("projection", "generation", "event_id")
    writes = [TableWrite.upsert(DEAD_LETTERS.name, {**row, "error": SCRUBBED}, key) for row in mine]
    writes += [  # a projection's last error is the text of the event it parked
        TableWrite.upsert(STATUS.name, {**row, "last_error": SCRUBBED}, ("name",))
        for row in status
        if row.get("last_error") and any(t in str(row["last_error"]) for t in texts)
    ]
    if writes:
        async with store.transaction() as tx:
            tx.write_tables(writes)
    return dropped, len(mine)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URL (None for other schemes or memory)."""
    if not url.startswith("sqlite://"):
        return None
    path = url.removeprefix("sqlite://").split("?", 1)[0].removeprefix("/")
    return None if path in ("", ":memory:") else Path(path)


def compact_sqlite(path: Path) -> None:
    """Rewrite a SQLite file so deleted rows leave no trace: checkpoint the WAL into the file,
    VACUUM (every page rewritten, free pages dropped), truncate the WAL."""
    if not path.is_file():
        raise ConfigurationError(f"no SQLite file at {path}")
    try:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot compact {path}: {exc}") from exc


async def compact_if_sqlite(url: str) -> bool:
    """On a SQLite file, ``compact_sqlite`` in a worker thread (the old bytes leave the file);
    False for other stores, or when the file stayed busy (logged: run it again later)."""
    path = sqlite_path(url)
    if path is None:
        return False
    try:
        await asyncio.to_thread(compact_sqlite, path)
    except StoreUnavailable as exc:  # busy writers: the redaction stands, compact later
        log.warning("redacted, but %s was not compacted: %s", path, exc)
        return False
    return True
