"""The key ring: subject keys cached in memory for a bounded time, in front of a KeyStore.

Encoding and decoding are synchronous (``EventRegistry.to_event_data``, ``decode``, the
repository's fast path), the key store is not: the ring answers synchronously from its cache
(``cached``: the key, None for a forgotten subject, or KeyNotLoaded) and fills it with
``await load(...)``. Entries live ``ttl`` seconds (the longest another process may still
decrypt a subject it had cached after a forget elsewhere) and at most ``max_keys`` are kept;
``forget`` drops the subject's entry before deleting the key (and then remembers it as
forgotten).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

from chronik.errors import ConfigurationError, KeyNotLoaded
from chronik.personal.base import KeyStore, check_subject

__all__ = ["KeyRing"]


class KeyRing:
    """Subject keys of one KeyStore, cached ``ttl`` seconds (``max_keys`` at most)."""

    def __init__(self, store: KeyStore, *, ttl: float = 60.0, max_keys: int = 10_000) -> None:
        if not isinstance(store, KeyStore):
            raise ConfigurationError(f"expected a KeyStore, got {store!r}")
        if not ttl > 0 or max_keys < 1:
            raise ConfigurationError("a KeyRing needs ttl > 0 and max_keys >= 1")
        self.store = store
        self.ttl = ttl
        self.max_keys = max_keys
        self._cache: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()

    def cached(self, subject: str) -> bytes | None:
        """The subject's key from the cache, None if it has none (forgotten); KeyNotLoaded if
        the cache does not know (or no longer knows) the subject."""
        hit = self._cache.get(subject)
        if hit is None or hit[0] < time.monotonic():
            raise KeyNotLoaded(subject)
        return hit[1]

    def _keep(self, subject: str, key: bytes | None) -> None:
        self._cache[subject] = (time.monotonic() + self.ttl, key)
        self._cache.move_to_end(subject)
        while len(self._cache) > self.max_keys:
            self._cache.popitem(last=False)

    async def load(self, subjects: Iterable[str], create: bool = False) -> None:
        """Put the subjects' keys in the cache (creating missing ones with ``create``)."""
        for subject in dict.fromkeys(subjects):
            hit = self._cache.get(subject)
            if hit is not None and hit[0] >= time.monotonic() and (hit[1] or not create):
                continue
            self._keep(subject, await self.store.key_for(check_subject(subject), create))

    async def forget(self, subject: str) -> bool:
        """Drop the subject's cached key, then delete its key in the store (see KeyStore)."""
        self._cache.pop(subject, None)
        deleted = await self.store.forget(subject)
        self._keep(subject, None)  # known forgotten: decodes yield placeholders from now on
        return deleted

    def clear(self) -> None:
        """Drop every cached key."""
        self._cache.clear()

    def __repr__(self) -> str:
        return f"<KeyRing {self.store!r} cached={len(self._cache)} ttl={self.ttl}s>"
