"""The key-store conformance suite: what ``chronik.personal.base.KeyStore`` means.

Subclass ``KeyStoreConformance`` in a test class with a ``key_store`` fixture (a fresh, empty
adapter); ``tests/conformance/test_key_stores.py`` runs it on memory, SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio

import pytest

from chronik.errors import ValidationError
from chronik.personal.base import KEY_BYTES, KeyStore
from chronik.personal.keyring import KeyRing

__all__ = ["KeyStoreConformance"]


class KeyStoreConformance:
    """Create on first use, read back, forget with a tombstone, refuse bad subjects."""

    async def test_no_key_until_created(self, key_store: KeyStore) -> None:
        """A subject has no key until ``key_for(create=True)``, which makes a random 32-byte
        one that later reads return unchanged."""
        assert await key_store.key_for("c-1") is None
        key = await key_store.key_for("c-1", create=True)
        assert isinstance(key, bytes) and len(key) == KEY_BYTES
        assert await key_store.key_for("c-1") == key
        assert await key_store.key_for("c-1", create=True) == key
        assert await key_store.key_for("c-2", create=True) != key

    async def test_concurrent_creators_agree_on_one_key(self, key_store: KeyStore) -> None:
        """Creators racing for a new subject all get the same key."""
        keys = await asyncio.gather(*(key_store.key_for("racy", create=True) for _ in range(8)))
        assert len(set(keys)) == 1 and keys[0] is not None

    async def test_forget_deletes_the_key_and_keeps_a_tombstone(self, key_store: KeyStore) -> None:
        """After ``forget`` the key is gone for good: no read returns it, ``create`` does not
        make a new one, ``forgotten`` says so; forgetting again reports no key deleted."""
        await key_store.key_for("c-1", create=True)
        other = await key_store.key_for("c-2", create=True)
        assert not await key_store.forgotten("c-1")
        assert await key_store.forget("c-1") is True
        assert await key_store.key_for("c-1") is None
        assert await key_store.key_for("c-1", create=True) is None
        assert await key_store.forgotten("c-1")
        assert await key_store.forget("c-1") is False
        assert await key_store.key_for("c-2") == other

    async def test_forgetting_an_unknown_subject_blocks_it(self, key_store: KeyStore) -> None:
        """A subject forgotten before it had a key never gets one."""
        assert await key_store.forget("never") is False
        assert await key_store.forgotten("never")
        assert await key_store.key_for("never", create=True) is None

    @pytest.mark.parametrize("subject", ["", "a\x00b", "x" * 257, 7])
    async def test_bad_subjects_are_refused(self, key_store: KeyStore, subject: object) -> None:
        """An empty, over-long, non-printable or non-str subject is a ValidationError naming
        the subject field."""
        for call in (key_store.key_for, key_store.forget, key_store.forgotten):
            with pytest.raises(ValidationError) as info:
                await call(subject)  # type: ignore[arg-type]
            assert info.value.field == "subject"

    async def test_a_key_ring_caches_and_forget_clears(self, key_store: KeyStore) -> None:
        """A KeyRing over the adapter answers from its cache after ``load`` and knows the
        subject as forgotten (None) right after its own ``forget``."""
        ring = KeyRing(key_store, ttl=30)
        await ring.load(["c-9"], create=True)
        key = ring.cached("c-9")
        assert key == await key_store.key_for("c-9")
        assert await ring.forget("c-9") is True
        assert ring.cached("c-9") is None
        assert await key_store.key_for("c-9") is None
