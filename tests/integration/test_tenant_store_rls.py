"""PostgreSQL row-level security per tenant: a role that does not own the tables, its
sessions scoped by ``chronik.tenant`` (a store URL's ``?tenant=``, or ``ALTER ROLE ... SET``),
sees one tenant's rows, even through raw SQL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

import chronik
from chronik import EventData, StreamId
from chronik.errors import ChronikError, PermissionDenied
from chronik.store.postgres.schema import split_url

_roles = itertools.count(1)


def _as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{role}@{host}", parts.path, parts.query, parts.fragment))


@pytest.fixture
async def app_role(postgres_url: str) -> AsyncIterator[tuple[str, str]]:
    """A store with events in three tenants, and a login role (not the owner) with the rights
    an application needs on its schema: (its name, the store URL as that role)."""
    async with chronik.open_store(postgres_url) as store:
        for tenant in ("acme", "beta", ""):
            for n in range(3):
                await store.append(StreamId("d", f"s{n}", tenant), [EventData("e", {"t": tenant})])
    dsn, options = split_url(postgres_url)
    s = f'"{options["schema"]}"'
    role = f"tenant_app_{options['schema']}_{next(_roles)}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
        await conn.execute(f"GRANT USAGE ON SCHEMA {s} TO {role}")
        await conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {role}"
        )
        await conn.execute(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {role}")
        yield role, _as_role(postgres_url, role)
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def test_raw_sql_of_a_scoped_role_sees_one_tenant(
    postgres_url: str, app_role: tuple[str, str]
) -> None:
    """Raw SELECTs as the role see all rows unscoped, one tenant's once scoped (by session
    setting or by the role's default), the default tenant's with '-', and never another's."""
    role, _ = app_role
    dsn, options = split_url(postgres_url)
    s = f'"{options["schema"]}"'
    sql = f"SELECT DISTINCT tenant FROM {s}.events UNION SELECT DISTINCT tenant FROM {s}.streams"
    raw = _as_role(dsn, role)
    conn = await asyncpg.connect(raw)
    try:
        assert {r[0] for r in await conn.fetch(sql)} == {"acme", "beta", ""}
    finally:
        await conn.close()
    for setting, seen in (("acme", {"acme"}), ("-", {""}), ("nobody", set())):
        conn = await asyncpg.connect(raw, server_settings={"chronik.tenant": setting})
        try:
            assert {r[0] for r in await conn.fetch(sql)} == seen
            count = await conn.fetchval(f"SELECT count(*) FROM {s}.events WHERE tenant = 'beta'")
            assert count == 0
        finally:
            await conn.close()
    owner = await asyncpg.connect(dsn)
    try:
        await owner.execute(f"ALTER ROLE {role} SET chronik.tenant = 'beta'")
    finally:
        await owner.close()
    conn = await asyncpg.connect(raw)
    try:
        assert {r[0] for r in await conn.fetch(sql)} == {"beta"}
    finally:
        await conn.close()


async def test_a_store_opened_for_a_tenant_reads_and_writes_only_it(
    app_role: tuple[str, str],
) -> None:
    """?tenant=acme as the role: every read is acme's, and a write to another tenant fails
    with nothing stored."""
    _, url = app_role
    async with chronik.open_store(f"{url}&tenant=acme&migrate=false") as store:
        every = [e async for e in store.read_all()]
        assert len(every) == 3 and {e.stream.tenant for e in every} == {"acme"}
        assert [i.stream.tenant async for i in store.list_streams()] == ["acme"] * 3
        assert await store.stream_version(StreamId("d", "s0", "beta")) is None
        await store.append(StreamId("d", "new", "acme"), [EventData("e", {})])
        with pytest.raises(ChronikError) as err:
            await store.append(StreamId("d", "new", "beta"), [EventData("e", {})])
        assert isinstance(err.value, PermissionDenied) and "row-level" in str(err.value)
    async with chronik.open_store(f"{url}&migrate=false") as store:
        streams = {str(i.stream) async for i in store.list_streams()}
        assert "acme:d/new" in streams and "beta:d/new" not in streams


async def test_raw_sql_on_event_tags_sees_no_tag_of_another_tenant(
    postgres_url: str, app_role: tuple[str, str]
) -> None:
    """Tags of events in two tenants: a role scoped to acme selects acme's tags only (0 of
    beta's, none of the default tenant's), deletes none of beta's; unscoped it sees them all."""
    role, _ = app_role
    async with chronik.open_store(postgres_url) as store:
        for tenant in ("acme", "beta", ""):
            data = [EventData("t", {}, tags=["course:c1", f"who:{tenant or 'default'}"])]
            await store.append(StreamId("d", "tagged", tenant), data)
    dsn, options = split_url(postgres_url)
    s = f'"{options["schema"]}"'
    raw = _as_role(dsn, role)
    every = f"SELECT tag FROM {s}.event_tags ORDER BY tag"
    conn = await asyncpg.connect(raw)
    try:
        assert len(await conn.fetch(every)) == 6
    finally:
        await conn.close()
    conn = await asyncpg.connect(raw, server_settings={"chronik.tenant": "acme"})
    try:
        assert [r[0] for r in await conn.fetch(every)] == ["course:c1", "who:acme"]
        beta = f"SELECT count(*) FROM {s}.event_tags WHERE tag IN ('who:beta', 'who:default')"
        assert await conn.fetchval(beta) == 0
        assert await conn.execute(f"DELETE FROM {s}.event_tags WHERE tag = 'who:beta'") == (
            "DELETE 0"
        )
    finally:
        await conn.close()
    conn = await asyncpg.connect(raw, server_settings={"chronik.tenant": "-"})
    try:
        assert [r[0] for r in await conn.fetch(every)] == ["course:c1", "who:default"]
    finally:
        await conn.close()
    owner = await asyncpg.connect(dsn)
    try:
        assert await owner.fetchval(f"SELECT count(*) FROM {s}.event_tags") == 6
    finally:
        await owner.close()


async def test_a_tenant_scoped_store_appends_and_queries_tagged_events(
    app_role: tuple[str, str],
) -> None:
    """As the role with ?tenant=acme, a tagged append (tags written with the event in one
    statement) passes the event_tags policy, and a tag query finds acme's events only."""
    _, url = app_role
    async with chronik.open_store(f"{url}&tenant=acme&migrate=false") as store:
        await store.append(StreamId("d", "t1", "acme"), [EventData("t", {}, tags=["k:1"])])
        found = [e async for e in store.read_query(chronik.Query.of(tags=["k:1"]))]
        assert [e.stream.tenant for e in found] == ["acme"]
