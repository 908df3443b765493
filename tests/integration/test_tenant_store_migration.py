"""Schema 9 (each event row carries its stream's tenant) fills in the tenant of events stored
before it, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

import chronik
from chronik import EventData, StreamId
from chronik.store.postgres.schema import split_url


async def _seed(url: str) -> None:
    async with chronik.open_store(url) as store:
        for tenant in ("acme", "", "beta", "acme"):
            await store.append(StreamId("d", "s", tenant), [EventData("e", {"t": tenant})])


async def _tenants_read(url: str) -> dict[str, list[str]]:
    async with chronik.open_store(url) as store:
        return {
            t: [e.json()["t"] async for e in store.read_all(tenant=t)] for t in ("acme", "", "beta")
        }


async def test_sqlite_events_stored_before_schema_9_get_their_tenant(tmp_path: Path) -> None:
    """A database rolled back to schema 8 (no tenant column) reads per tenant once migrated."""
    url = f"sqlite:///{tmp_path}/m.db"
    await _seed(url)
    raw = sqlite3.connect(tmp_path / "m.db")
    raw.execute("DROP INDEX chronik_events_tenant")
    raw.execute("ALTER TABLE chronik_events DROP COLUMN tenant")
    raw.execute("DELETE FROM chronik_schema WHERE version = 9")
    raw.commit()
    raw.close()
    assert await _tenants_read(url) == {"acme": ["acme", "acme"], "": [""], "beta": ["beta"]}


async def test_postgres_events_stored_before_schema_9_get_their_tenant(postgres_url: str) -> None:
    """A schema rolled back to version 8 reads per tenant once migrated, and new appends get
    their tenant from the append functions."""
    await _seed(postgres_url)
    dsn, options = split_url(postgres_url)
    s = f'"{options["schema"]}"'
    conn = await asyncpg.connect(dsn)
    try:
        for table in ("events", "streams", "snapshots"):
            await conn.execute(f"DROP POLICY {table}_tenant ON {s}.{table}")
        await conn.execute(f"DROP POLICY event_tags_tenant ON {s}.event_tags")
        await conn.execute(f"DROP FUNCTION {s}.tag_in_tenant(bigint, bigint)")
        await conn.execute(f"DROP TRIGGER events_tenant ON {s}.events")
        await conn.execute(f"DROP FUNCTION {s}.event_tenant()")
        await conn.execute(f"ALTER TABLE {s}.events DROP COLUMN tenant")
        await conn.execute(f"DELETE FROM {s}.schema_migrations WHERE version >= 9")
    finally:
        await conn.close()
    assert await _tenants_read(postgres_url) == {
        "acme": ["acme", "acme"],
        "": [""],
        "beta": ["beta"],
    }
    await _seed(postgres_url)
    got = await _tenants_read(postgres_url)
    assert got["acme"] == ["acme"] * 4 and got["beta"] == ["beta"] * 2


async def test_postgres_append_functions_write_the_tenant_without_the_trigger(
    postgres_url: str,
) -> None:
    """Schema 10: appends set each event's tenant themselves (a trigger that fails is never
    reached), while an insert that leaves the tenant out still gets its stream's."""
    await _seed(postgres_url)
    dsn, options = split_url(postgres_url)
    s = f'"{options["schema"]}"'
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"CREATE OR REPLACE FUNCTION {s}.event_tenant() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN RAISE EXCEPTION 'trigger reached'; END $$"
        )
        async with chronik.open_store(postgres_url) as store:
            await _seed(postgres_url)
            await store.append_tagged([EventData("e", {"t": "acme"}, tags=["k:1"])])
        got = await _tenants_read(postgres_url)
        assert got["acme"] == ["acme"] * 4 and got["beta"] == ["beta"] * 2
        with pytest.raises(asyncpg.RaiseError, match="trigger reached"):
            await conn.execute(
                f"INSERT INTO {s}.events (xid, stream_id, sequence, event_id, type, "
                "schema_version, payload, content_type, recorded_at) "
                f"SELECT 1, id, 99, 'raw', 'e', 1, '', 'application/json', 0 FROM {s}.streams "
                "WHERE tenant = 'beta' LIMIT 1"
            )
    finally:
        await conn.close()
