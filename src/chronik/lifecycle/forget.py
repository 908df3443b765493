"""Forgetting a subject (crypto-shredding), audited, and compacting a SQLite file afterwards.

``forget_subject`` deletes the subject's key (``KeyRing.forget``) and appends the audit event
``chronik.subject_forgotten`` (who, why, whether a key was deleted; the store stamps when) to the
subject's stream ``chronik.subjects/<subject>``. From then on every copy of the subject's
personal fields is ciphertext without a key: events, outbox rows, transport messages in flight,
exports, archives. Derived data that held opened values (read-model rows) is made clean by a
rebuild, which now writes the placeholders; on SQLite ``compact_sqlite`` then rewrites the file
(checkpoint, VACUUM, checkpoint) so no free page or WAL frame keeps an old row or the old key.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

import msgspec

from chronik.errors import ConfigurationError, StoreUnavailable, ValidationError
from chronik.lifecycle.subject_keys import SUBJECTS_DOMAIN
from chronik.messages import EventData, StreamId
from chronik.personal.base import check_subject
from chronik.personal.keyring import KeyRing
from chronik.store.base import EventStore

__all__ = ["FORGOTTEN_EVENT", "ForgetReport", "compact_sqlite", "forget_subject", "sqlite_path"]

FORGOTTEN_EVENT: Final = "chronik.subject_forgotten"


class ForgetReport(msgspec.Struct, frozen=True):
    """What ``forget_subject`` did: the key deleted (False: none was left) and the audit event."""

    subject: str
    key_deleted: bool
    by: str
    reason: str
    audit_event_id: str


async def forget_subject(
    store: EventStore, keys: KeyRing, subject: str, *, by: str, reason: str = ""
) -> ForgetReport:
    """Delete ``subject``'s key and record who did it and why (idempotent: forgetting again
    deletes nothing and records another audit event)."""
    check_subject(subject)
    if not isinstance(by, str) or not by.strip():
        raise ValidationError("forgetting a subject needs who asks for it", field="by")
    deleted = await keys.forget(subject)
    audit = EventData(
        FORGOTTEN_EVENT,
        {"subject": subject, "by": by, "reason": reason, "key_deleted": deleted},
        {"actor": by},
    )
    await store.append(StreamId(SUBJECTS_DOMAIN, subject), [audit])
    return ForgetReport(subject, deleted, by, reason, audit.event_id)


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
