"""Subject keys in the store's own database: the ``chronik_subject_keys`` table.

Works on every store with read-model tables (memory, SQLite, PostgreSQL, Redis, LMDB, MySQL):
it reads with ``read_table`` and writes with a unit of work. The table is created on first use
(an ``ensure`` write). Creating a key is race-free across processes: the unit that stores a
new key also appends a marker event (``chronik.subject_key_created``, no key material) to the
subject's stream ``chronik.subjects/<subject>`` with expectation NO_STREAM, so of two concurrent
creators exactly one commits and the other reads the winner's key. Forgetting overwrites the
key with NULL and sets ``forgotten_at`` (the row stays as the tombstone) in one unit with a
``chronik.subject_key_deleted`` marker on the same stream, so a creation racing it fails too.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Final

from chronik.errors import ReadModelError, StoreUnavailable, WrongExpectedVersion
from chronik.messages import NO_STREAM, EventData, StreamId
from chronik.personal.base import KEY_BYTES, KeyStore, check_subject
from chronik.store.base import EventStore
from chronik.store.records import TableSpec, TableWrite

__all__ = ["KEY_CREATED", "KEY_DELETED", "SUBJECTS_DOMAIN", "SUBJECT_KEYS", "StoreKeyStore"]

SUBJECT_KEYS: Final = TableSpec(
    "chronik_subject_keys",
    (
        ("subject", "TEXT"),
        ("data_key", "BLOB"),  # NULL once forgotten
        ("created_at", "INTEGER"),  # unix microseconds
        ("forgotten_at", "INTEGER"),  # NULL until forgotten
    ),
    ("subject",),
)
#: the domain of the per-subject marker streams (key created, subject forgotten)
SUBJECTS_DOMAIN: Final = "chronik.subjects"
KEY_CREATED: Final = "chronik.subject_key_created"
KEY_DELETED: Final = "chronik.subject_key_deleted"
_ATTEMPTS = 3


def _now_us() -> int:
    return time.time_ns() // 1000


class StoreKeyStore(KeyStore):
    """Subject keys in ``store``'s ``chronik_subject_keys`` table (the store is not closed here)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._ensured = False
        self._lock = asyncio.Lock()

    async def _ensure(self) -> None:
        """Create the table once (one creator per process; a racing process is retried)."""
        if self._ensured:
            return
        async with self._lock:
            for attempt in range(_ATTEMPTS):
                try:
                    async with self.store.transaction() as tx:
                        ensure = TableWrite("ensure", SUBJECT_KEYS.name, spec=SUBJECT_KEYS)
                        tx.write_tables([ensure])
                    break
                except ReadModelError:  # PostgreSQL: CREATE IF NOT EXISTS racing another
                    if attempt == _ATTEMPTS - 1:
                        raise
            self._ensured = True

    async def _row(self, subject: str) -> dict[str, Any] | None:
        await self._ensure()
        rows = await self.store.read_table(SUBJECT_KEYS.name, {"subject": subject})
        return rows[0] if rows else None

    async def key_for(self, subject: str, create: bool = False) -> bytes | None:
        """The subject's key (a new one with ``create``); None if forgotten or absent."""
        check_subject(subject)
        for _ in range(_ATTEMPTS):
            row = await self._row(subject)
            if row is not None:
                key = row["data_key"]
                return None if key is None or row["forgotten_at"] is not None else bytes(key)
            if not create:
                return None
            key = os.urandom(KEY_BYTES)
            marker = EventData(KEY_CREATED, {"subject": subject})
            try:
                async with self.store.transaction() as tx:
                    tx.append(StreamId(SUBJECTS_DOMAIN, subject), [marker], expected=NO_STREAM)
                    tx.write_tables([self._write(subject, key, _now_us(), None)])
            except WrongExpectedVersion:
                continue  # another creator won (or the subject was forgotten): read again
            return key
        raise StoreUnavailable(
            f"the key of subject {subject!r} could not be read or created: its marker stream "
            f"{SUBJECTS_DOMAIN}/{subject} exists but {SUBJECT_KEYS.name} has no row for it"
        )

    async def forget(self, subject: str) -> bool:
        """NULL the key, keep the row as tombstone; True if a key was there."""
        check_subject(subject)
        row = await self._row(subject)
        if row is not None and row["forgotten_at"] is not None:
            return False
        had = row is not None and row["data_key"] is not None
        created = row["created_at"] if row is not None else None
        marker = EventData(KEY_DELETED, {"subject": subject})
        async with self.store.transaction() as tx:  # the marker fails a concurrent creation
            tx.append(StreamId(SUBJECTS_DOMAIN, subject), [marker])
            tx.write_tables([self._write(subject, None, created, _now_us())])
        return had

    async def forgotten(self, subject: str) -> bool:
        """Whether the subject has a tombstone."""
        check_subject(subject)
        row = await self._row(subject)
        return row is not None and row["forgotten_at"] is not None

    @staticmethod
    def _write(subject: str, key: bytes | None, created: Any, forgotten: int | None) -> TableWrite:
        return TableWrite.upsert(
            SUBJECT_KEYS.name,
            {"subject": subject, "data_key": key, "created_at": created, "forgotten_at": forgotten},
            ("subject",),
        )

    def __repr__(self) -> str:
        return f"<StoreKeyStore on {type(self.store).__name__}>"
