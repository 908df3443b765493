"""The PostgreSQL payload-row read of a DCB query in one tenant: the tenant is bound once, checked
in each tag key's probe of its event (or by the tenant index for a tag-less item), and the text
cached per shape binds the arguments the builder binds."""

from __future__ import annotations

import re

import pytest

from chronik import Position, Query
from chronik.store.postgres import dcb
from tests.unit.test_dcb_payload_sql import SHAPES


@pytest.mark.parametrize("query", SHAPES, ids=str)
@pytest.mark.parametrize("after", [None, Position(7, 3)])
@pytest.mark.parametrize("tenant", ["", "acme"])
def test_a_tenants_cached_text_binds_what_the_builder_binds(
    query: Query, after: Position | None, tenant: str
) -> None:
    """Fresh and cached builds agree on text and arguments; every placeholder is bound; the
    tenant is $2, checked once per item; a tenant's text is never the every-tenant one."""
    dcb._PAYLOAD_SQL.clear()
    fresh = dcb.query_payloads_sql('"s"', query, after, 1000, tenant)
    assert dcb.query_payloads_sql('"s"', query, after, 1000, tenant) == fresh
    sql, args = fresh
    assert {int(n) for n in re.findall(r"\$(\d+)", sql)} == set(range(1, len(args) + 1))
    assert args[:2] == [1000, tenant] and args.count(tenant) == 1
    tagged = sum(1 for i in query.items if i.tags)
    assert sql.count("AND e.tenant = $2 LIMIT 1) AS e") == tagged
    assert sql.count("k.tenant = $2") == len(query.items) - tagged
    every_sql, every_args = dcb.query_payloads_sql('"s"', query, after, 1000)
    assert "tenant" not in every_sql and every_args == [1000, *args[2:]]
    other = dcb.query_payloads_sql('"s"', query, after, 10, "beta")
    assert other[0] == sql and other[1] == [10, "beta", *args[2:]]
