"""Multi-host PostgreSQL URLs are split into one DSN per host, in order, for HostList."""

from __future__ import annotations

import pytest

pytest.importorskip("asyncpg")

from chronik.store.postgres.failover import HostList, split_hosts


def test_each_host_keeps_the_user_database_and_query() -> None:
    """``u@h1:1,h2:2/db?q`` becomes ``u@h1:1/db?q`` and ``u@h2:2/db?q``, in that order."""
    dsn = "postgresql://app:pw@db1:5432,[::1]:5433/shop?target_session_attrs=read-write"
    assert split_hosts(dsn) == [
        "postgresql://app:pw@db1:5432/shop?target_session_attrs=read-write",
        "postgresql://app:pw@[::1]:5433/shop?target_session_attrs=read-write",
    ]


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app@db1:5432/shop",  # one host
        "postgresql://app@db1,db2/shop?target_session_attrs=prefer-standby",  # needs all hosts
        "postgresql:///shop?host=db1,db2",  # hosts in the query: asyncpg walks them
    ],
)
def test_what_asyncpg_walks_itself_stays_whole(dsn: str) -> None:
    """One host, prefer-standby (a choice among all hosts) and query-string hosts stay one DSN."""
    assert split_hosts(dsn) == [dsn]


def test_each_host_gets_its_share_of_the_timeout() -> None:
    """Two hosts in 10 s: 5 s each; many hosts: never under the minimum (nor the timeout)."""
    assert HostList("postgresql://a@h1,h2/db", 10).host_timeout == 5
    assert HostList("postgresql://a@h1,h2,h3,h4,h5,h6,h7,h8,h9,h10/db", 10).host_timeout == 2
    assert HostList("postgresql://a@h1,h2/db", 1, min_host_timeout=2).host_timeout == 1
