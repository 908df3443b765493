"""Personal-data subjects as operators see them: the key ring to act with, the forgotten list.

Shared by the HTTP API (``chronik.server.http_gdpr``), the admin UI's Personal data page and
the CLI, so each forgets through the app's own key ring when it has one (its cache drops the
subject at once) and lists the same tombstones.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chronik.codec import EventRegistry
from chronik.errors import ConfigurationError, ReadModelError
from chronik.lifecycle.subject_keys import SUBJECT_KEYS, StoreKeyStore
from chronik.personal.keyring import KeyRing
from chronik.store.base import EventStore

__all__ = ["ForgottenSubject", "forgotten_subjects", "key_ring_for"]


class ForgottenSubject(msgspec.Struct, frozen=True):
    """A tombstone: the subject and when its key was deleted (unix microseconds)."""

    subject: str
    forgotten_at: int


def key_ring_for(store: EventStore, registry: EventRegistry | None = None) -> KeyRing:
    """The registry's key ring when it has one on this store, else a ring of the store's own
    key table (``chronik_subject_keys``)."""
    keys = None if registry is None else registry.keys
    if keys is not None and isinstance(keys.store, StoreKeyStore) and keys.store.store is store:
        return keys
    if keys is not None and not isinstance(keys.store, StoreKeyStore):
        return keys  # an external KMS adapter: it is where the keys live
    return KeyRing(StoreKeyStore(store))


async def forgotten_subjects(store: EventStore, limit: int = 1000) -> list[ForgottenSubject]:
    """The forgotten subjects, most recent first (at most ``limit``)."""
    try:
        rows: list[dict[str, Any]] = await store.read_table(SUBJECT_KEYS.name)
    except (ReadModelError, ConfigurationError):  # no key was ever created here
        return []
    gone = [
        ForgottenSubject(str(r["subject"]), int(r["forgotten_at"]))
        for r in rows
        if r.get("forgotten_at") is not None
    ]
    gone.sort(key=lambda s: (-s.forgotten_at, s.subject))
    return gone[:limit]
