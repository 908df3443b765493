"""The plans a session caches for DCB reads on PostgreSQL: a statement prepared and run while
the tables were small (its generic plan chosen then, as on a new store) must still reach
events and streams by key once the log has grown, so a query costs what it matches."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

import chronik
from chronik import EventData, Query, QueryItem
from chronik.store.postgres.dcb import query_page_sql, query_payloads_sql
from chronik.store.postgres.read import COLS
from chronik.store.postgres.schema import quote_schema, split_url

pytestmark = pytest.mark.timeout(120)

#: the speedrun's subscription query: two items, each with types and one tag
QUERY = Query(
    [
        QueryItem(["course.defined", "student.subscribed"], ["course:c1"]),
        QueryItem(["student.registered", "student.subscribed"], ["student:s1"]),
    ]
)


async def _rows_visited(conn: asyncpg.Connection, s: str, sql: str, args: list[Any]) -> int:
    """Rows of events and streams one run of ``sql`` visited (this transaction's counters)."""
    async with conn.transaction():
        await conn.fetch(sql, *args)
        visited = await conn.fetchval(
            "SELECT sum(pg_stat_get_xact_tuples_returned(c.oid) "
            "+ pg_stat_get_xact_tuples_fetched(c.oid)) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relname IN ('events', 'streams')",
            s.strip('"'),
        )
    return int(visited or 0)


@pytest.mark.parametrize(
    "shape", ["page", "backward", "payload rows", "tenant rows", "tenant type rows"]
)
async def test_a_query_read_visits_what_it_matches_after_the_log_grew(
    postgres_url: str, shape: str
) -> None:
    """The statement run ten times on a near-empty log (its generic plan cached), then after
    3,000 more events: it visits about as many events and stream rows as before, not the log.
    Payload rows of a tenant: a tag's key probes its event once (the tenant checked there); a
    type-only item of a tenant walks that tenant's events, not the default tenant's 3,000."""
    dsn, options = split_url(postgres_url)
    s = quote_schema(options["schema"])
    tenant = "acme" if shape.startswith("tenant") else ""
    if shape == "payload rows":
        sql, args = query_payloads_sql(s, QUERY, None, 1000)
    elif shape == "tenant rows":
        sql, args = query_payloads_sql(s, QUERY, None, 1000, tenant)
    elif shape == "tenant type rows":
        sql, args = query_payloads_sql(s, Query.of(["student.subscribed"]), None, 1000, tenant)
    else:
        sql, args = query_page_sql(s, COLS, QUERY, None, 1000, shape == "backward")
    async with chronik.open_store(postgres_url) as store:
        mine = [EventData("student.subscribed", {"n": i}, tags=["course:c1"]) for i in range(3)]
        await store.append_tagged(mine, tenant=tenant)
        conn = await asyncpg.connect(dsn)
        try:
            for _ in range(10):  # custom plans, then the generic one, made on three events
                assert len(await conn.fetch(sql, *args)) == 3
            small = await _rows_visited(conn, s, sql, args)
            for start in range(0, 3000, 500):
                await store.append_tagged(
                    [
                        EventData("student.subscribed", {"n": i}, tags=[f"course:x{i}"])
                        for i in range(start, start + 500)
                    ]
                )
            big = await _rows_visited(conn, s, sql, args)
            assert len(await conn.fetch(sql, *args)) == 3
        finally:
            await conn.close()
    assert big <= small + 10, (small, big)
