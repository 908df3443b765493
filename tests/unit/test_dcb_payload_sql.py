"""The PostgreSQL payload-row read of a DCB query: its SQL is built once per query shape, and the
arguments bound from the cache are the ones the builder binds."""

from __future__ import annotations

import re

import pytest

from chronik import Position, Query, QueryItem
from chronik.store.postgres import dcb

SHAPES = [
    Query.of(tags=["course:c1"]),
    Query.of(["course.defined"], ["course:c1"]),
    Query.of(["course.defined", "student.subscribed"]),
    Query([QueryItem(["a.b"], ["t:1", "t:2", "t:3"])]),
    Query(
        [
            QueryItem(["course.defined", "student.subscribed"], ["course:c1"]),
            QueryItem(["student.registered", "student.subscribed"], ["student:s1"]),
            QueryItem(),
        ]
    ),
]


@pytest.mark.parametrize("query", SHAPES, ids=str)
@pytest.mark.parametrize("after", [None, Position(7, 3)])
def test_cached_text_binds_the_arguments_the_builder_binds(
    query: Query, after: Position | None
) -> None:
    """For every shape, with and without ``after``: a fresh build and a cached one give the
    same text and the same arguments, and a query of the same shape with other values reuses
    the text with its own values."""
    dcb._PAYLOAD_SQL.clear()
    fresh_sql, fresh_args = dcb.query_payloads_sql('"s"', query, after, 1000)
    cached_sql, cached_args = dcb.query_payloads_sql('"s"', query, after, 1000)
    assert cached_sql == fresh_sql and cached_args == fresh_args
    assert {int(n) for n in re.findall(r"\$(\d+)", fresh_sql)} == set(range(1, len(fresh_args) + 1))
    other = Query(
        [QueryItem([t.upper() for t in i.types], [f"{t}x" for t in i.tags]) for i in query.items]
    )
    dcb._PAYLOAD_SQL.clear()
    expected = dcb.query_payloads_sql('"s"', other, after, 10)
    dcb._PAYLOAD_SQL.clear()
    dcb.query_payloads_sql('"s"', query, after, 1000)
    assert dcb.query_payloads_sql('"s"', other, after, 10) == expected


def test_tag_items_probe_each_event_once() -> None:
    """Tag items reach the events table through one probe per key (a LATERAL LIMIT 1), so no
    cached plan can turn the read into a scan of the log per key; events come once each."""
    sql, _ = dcb.query_payloads_sql('"s"', SHAPES[4], None, 1000)
    assert sql.count("CROSS JOIN LATERAL") == 2
    assert sql.startswith("SELECT DISTINCT ON (m.xid, m.id)")
    assert '"s".streams' not in sql
