"""A PostgreSQL hot standby for tests: ``pg_basebackup -R`` of a running ``PostgresService``.

The standby streams the primary's WAL over a replication connection on loopback (the primary
needs ``wal_level=replica``, WAL senders and a ``replication`` line in ``pg_hba.conf``: a
cluster made by ``initdb -A trust`` on PostgreSQL 15 has all three by default) and serves
read-only queries (``hot_standby``) on a free port of its own::

    with PostgresService() as primary, PostgresReplica(primary) as standby:
        url = standby.url("postgres", schema="chronik")

``pause_replay`` / ``resume_replay`` (``pg_wal_replay_pause()``) hold the standby at a point in
the WAL, so a test can make it lag on purpose; ``wait_caught_up`` waits until it has replayed
everything the primary has written. Imports the standard library and ``chronik.testing``'s
services; asyncpg lazily (the async helpers).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from pathlib import Path

from chronik.testing.service_base import ServiceNotStarted
from chronik.testing.services import PostgresService

__all__ = ["PostgresReplica"]


class PostgresReplica(PostgresService):
    """A hot standby of ``primary`` (streaming replication, read-only queries)."""

    name = "postgresql-standby"
    binaries = ("pg_basebackup", "pg_ctl", "postgres")

    def __init__(self, primary: PostgresService, *, feedback: bool = False) -> None:
        super().__init__(durable=False, max_connections=primary.max_connections)
        self.primary = primary
        #: ``hot_standby_feedback``: the primary keeps rows the standby's queries still see.
        self.feedback = feedback

    def _prepare(self, workdir: Path) -> None:
        if not self.primary.running:
            raise ServiceNotStarted("the primary of the standby is not running")
        if os.geteuid() == 0:
            user = pwd.getpwnam(self.user)
            os.chown(workdir, user.pw_uid, user.pw_gid)
        self._run(
            [
                self.bin["pg_basebackup"],
                "-h",
                self.primary.host,
                "-p",
                str(self.primary.port),
                "-U",
                self.primary.user,
                "-D",
                str(self.data_dir),
                "-R",  # standby.signal + primary_conninfo
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
            timeout=180,
        )
        settings = {
            "port": str(self.port),
            "unix_socket_directories": f"'{workdir}'",
            "hot_standby": "on",
            "hot_standby_feedback": "on" if self.feedback else "off",
            "wal_receiver_status_interval": "'1s'",
            "max_standby_streaming_delay": "'30s'",
        }
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# chronik test standby (later lines win)\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    # --- replay control (asyncpg, for async tests) ----------------------------------------------

    async def _sql(self, sql: str, primary: bool = False) -> object:
        import asyncpg

        service = self.primary if primary else self
        conn = await asyncpg.connect(service.url("postgres"), timeout=10)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    async def pause_replay(self) -> None:
        """Stop applying WAL (``pg_wal_replay_pause()``); the standby falls behind."""
        await self._sql("SELECT pg_wal_replay_pause()")
        deadline = time.monotonic() + 10
        while await self._sql("SELECT pg_get_wal_replay_pause_state()") != "paused":
            if time.monotonic() > deadline:
                raise TimeoutError("the standby did not pause its replay")
            await asyncio.sleep(0.01)

    async def resume_replay(self) -> None:
        """Apply WAL again (``pg_wal_replay_resume()``)."""
        await self._sql("SELECT pg_wal_replay_resume()")

    async def wait_caught_up(self, seconds: float = 30) -> None:
        """Return once the standby has replayed all WAL the primary had written when called."""
        target = await self._sql("SELECT pg_current_wal_lsn()::text", primary=True)
        deadline = time.monotonic() + seconds
        while True:
            behind = await self._sql(
                f"SELECT pg_wal_lsn_diff('{target}'::pg_lsn, pg_last_wal_replay_lsn()) > 0"
            )
            if not behind:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the standby did not replay up to {target}")
            await asyncio.sleep(0.01)
