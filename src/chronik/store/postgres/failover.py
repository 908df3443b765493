"""Failover for the PostgreSQL store: what a store does when its server changes role.

A store URL may name several hosts with ``target_session_attrs`` (libpq's syntax, which asyncpg
understands): ``postgresql://app@db1:5432,db2:5432/app?target_session_attrs=read-write``. Every
new connection (the pool's, the LISTEN feed's) tries the hosts in order and keeps the first
that takes writes, so once a standby is promoted the store reaches it with no restart:

* an append in flight when the primary dies fails with ``StoreUnavailable(outcome_unknown=
  True)``; retried with the same event ids it returns the original result if the append had
  landed (and replicated), else appends it: never twice;
* until a host takes writes, writes fail with ``StoreUnavailable`` (outcome known: nothing was
  sent); connections to the dead host are dropped as they fail, never pooled again;
* the LISTEN feed reconnects with backoff (subscriptions poll meanwhile) and readers resume
  from their position.

asyncpg would bound the whole walk over the hosts by one timeout, so a primary that hangs
(frozen, or its packets dropped) would use it all up and the standby would never be tried:
``HostList`` tries the hosts one by one, each within its share of the timeout, and starts from
the host that answered last (a dead primary costs one timeout once, not on every connection).

A store opened on a hot standby (reads only) notices the standby's promotion: its replay
polling sees ``pg_is_in_recovery()`` turn false, and so does a write it is asked for; from then
on it is a primary's store (writes go through, LISTEN replaces the polling).

With synchronous replication (``synchronous_standby_names`` naming the standby,
``synchronous_commit = on``) a commit is acknowledged only once the standby has flushed it, and
it stays invisible to the primary's readers until then: a promoted standby has every event any
writer or reader has seen, at the same positions, and new transactions sort after them.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg

__all__ = ["HostList", "ReplayState", "replay_state", "split_hosts"]

#: What moves a connection attempt on to the next host (TargetServerAttributeNotMatched is an
#: InternalClientError).
_NEXT_HOST = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
#: target_session_attrs values whose choice needs all hosts at once (asyncpg walks them).
_WHOLE_LIST = frozenset({"prefer-standby"})


class ReplayState(NamedTuple):
    """Whether the server is still in recovery (a standby) and the last WAL location replayed."""

    recovering: bool
    lsn: str | None


async def replay_state(conn: asyncpg.Connection) -> ReplayState:
    """The server's ReplayState, in one round trip."""
    row = await conn.fetchrow("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text")
    assert row is not None
    recovering, lsn = row
    return ReplayState(bool(recovering), None if lsn is None else str(lsn))


def split_hosts(dsn: str) -> list[str]:
    """The single-host DSNs of a multi-host ``postgresql://u@h1:p1,h2:p2/db?...`` in order;
    ``[dsn]`` for one host (or hosts given in the query string: asyncpg walks those)."""
    parts = urlsplit(dsn)
    userinfo, at, hostspec = parts.netloc.rpartition("@")
    hosts = hostspec.split(",")
    if len(hosts) < 2 or not all(hosts):
        return [dsn]
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if query.get("target_session_attrs", "") in _WHOLE_LIST:
        return [dsn]
    return [
        urlunsplit((parts.scheme, f"{userinfo}{at}{host}", parts.path, parts.query, ""))
        for host in hosts
    ]


class HostList:
    """Connects to the first of a DSN's hosts that answers and matches its
    ``target_session_attrs``, each host within ``timeout / len(hosts)`` (at least
    ``min_host_timeout``), starting from the one that answered last."""

    def __init__(self, dsn: str, timeout: float, min_host_timeout: float = 2.0) -> None:
        self.dsns = split_hosts(dsn)
        self.timeout = timeout
        self.host_timeout = max(min(min_host_timeout, timeout), timeout / len(self.dsns))
        self._first = 0  # the index of the host that answered last

    async def connect(self, **options: Any) -> asyncpg.Connection:
        """A new connection (asyncpg.connect's keywords in ``options``); raises the last
        host's error when none answers within ``timeout``."""
        if len(self.dsns) == 1:
            return await asyncpg.connect(self.dsns[0], timeout=self.timeout, **options)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        n = len(self.dsns)
        error: BaseException | None = None
        for k in range(n):
            i = (self._first + k) % n
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                conn = await asyncpg.connect(
                    self.dsns[i], timeout=min(self.host_timeout, left), **options
                )
            except _NEXT_HOST as exc:
                error = exc  # down, frozen, starting up, or not the kind of server asked for
                continue
            self._first = i
            return conn
        raise error if error is not None else TimeoutError("no host answered in time")
