"""The reference key store: keys in a dict, for tests and single-process embedded use."""

from __future__ import annotations

import os
import time

from chronik.personal.base import KEY_BYTES, KeyStore, check_subject

__all__ = ["MemoryKeyStore"]


class MemoryKeyStore(KeyStore):
    """Subject keys in memory: subject -> (key or None once forgotten, created_at, forgotten_at)."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes | None] = {}
        self._created: dict[str, float] = {}
        self._forgotten: dict[str, float] = {}

    async def key_for(self, subject: str, create: bool = False) -> bytes | None:
        """The subject's key (a new one with ``create``); None if forgotten or absent."""
        check_subject(subject)
        if subject in self._forgotten:
            return None
        key = self._keys.get(subject)
        if key is None and create:
            key = self._keys[subject] = os.urandom(KEY_BYTES)
            self._created[subject] = time.time()
        return key

    async def forget(self, subject: str) -> bool:
        """Drop the key, keep a tombstone; True if a key was dropped."""
        check_subject(subject)
        had = self._keys.pop(subject, None) is not None
        self._forgotten.setdefault(subject, time.time())
        return had

    async def forgotten(self, subject: str) -> bool:
        """Whether ``forget`` ran for the subject."""
        check_subject(subject)
        return subject in self._forgotten

    def __repr__(self) -> str:
        return f"<MemoryKeyStore keys={len(self._keys)} forgotten={len(self._forgotten)}>"
