"""The key-store conformance suite on every adapter: memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import chronik
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.personal import MemoryKeyStore
from chronik.personal.base import KeyStore
from chronik.testing.conformance_keys import KeyStoreConformance


class TestMemoryKeyStore(KeyStoreConformance):
    """The reference adapter."""

    @pytest.fixture
    def key_store(self) -> KeyStore:
        """A fresh in-memory key store."""
        return MemoryKeyStore()


class TestStoreKeyStoreOnMemory(KeyStoreConformance):
    """The store-backed adapter on the memory event store."""

    @pytest.fixture
    async def key_store(self) -> AsyncIterator[KeyStore]:
        """Keys in a fresh memory store's chronik_subject_keys table."""
        async with chronik.open_store("memory://") as store:
            yield StoreKeyStore(store)


class TestStoreKeyStoreOnSqlite(KeyStoreConformance):
    """The store-backed adapter on SQLite."""

    @pytest.fixture
    async def key_store(self, tmp_path: Path) -> AsyncIterator[KeyStore]:
        """Keys in a fresh SQLite file's chronik_subject_keys table."""
        async with chronik.open_store(f"sqlite:///{tmp_path / 'keys.db'}") as store:
            yield StoreKeyStore(store)


class TestStoreKeyStoreOnPostgres(KeyStoreConformance):
    """The store-backed adapter on PostgreSQL."""

    @pytest.fixture
    async def key_store(self, postgres_url: str) -> AsyncIterator[KeyStore]:
        """Keys in a fresh PostgreSQL schema's chronik_subject_keys table."""
        async with chronik.open_store(postgres_url) as store:
            yield StoreKeyStore(store)
