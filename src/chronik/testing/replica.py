"""A PostgreSQL hot standby for tests: ``pg_basebackup -R`` of a running ``PostgresService``.

The standby streams the primary's WAL over a replication connection on loopback (the primary
needs ``wal_level=replica``, WAL senders and a ``replication`` line in ``pg_hba.conf``: a
cluster made by ``initdb -A trust`` on PostgreSQL 15 has all three by default) and serves
read-only queries (``hot_standby``) on a free port of its own::

    with PostgresService() as primary, PostgresReplica(primary) as standby:
        url = standby.url("postgres", schema="chronik")

``pause_replay`` / ``resume_replay`` (``pg_wal_replay_pause()``) hold the standby at a point in
the WAL, so a test can make it lag on purpose; ``wait_caught_up`` waits until it has replayed
everything the primary has written.

Failover drills: ``make_synchronous()`` turns synchronous replication on at the primary
(``synchronous_standby_names`` naming this standby's ``application_name``, which it sends as its
``cluster_name``; ``synchronous_commit=on`` by default: a commit is acknowledged once the standby
has flushed its WAL, so promoting the standby loses no acknowledged commit), ``crash(primary)``
kills the primary's postmaster and every process it started with SIGKILL (a power cut, no
shutdown checkpoint, no goodbye to clients), and ``promote()`` ends recovery (``pg_ctl promote``):
the standby becomes a primary that takes writes. ``failover_url(primary, standby)`` is the
multi-host URL an application uses to find whichever of them is the primary::

    with PostgresService() as primary, PostgresReplica(primary) as standby:
        await standby.make_synchronous()
        url = failover_url(primary, standby, schema="chronik")  # ...&target_session_attrs=...
        crash(primary)
        standby.promote()

Imports the standard library and ``chronik.testing``'s services; asyncpg lazily (the async
helpers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path
from typing import Final

from chronik.testing.service_base import ServiceNotStarted
from chronik.testing.services import PostgresService

__all__ = ["SYNC_MODES", "PostgresReplica", "crash", "failover_url"]

#: The ``synchronous_commit`` levels that wait for the standby (``make_synchronous``).
SYNC_MODES: Final = ("on", "remote_write", "remote_apply")


class PostgresReplica(PostgresService):
    """A hot standby of ``primary`` (streaming replication, read-only queries)."""

    name = "postgresql-standby"
    binaries = ("pg_basebackup", "pg_ctl", "postgres")

    def __init__(
        self,
        primary: PostgresService,
        *,
        feedback: bool = False,
        application_name: str = "chronik_standby",
    ) -> None:
        super().__init__(durable=False, max_connections=primary.max_connections)
        self.primary = primary
        #: ``hot_standby_feedback``: the primary keeps rows the standby's queries still see.
        self.feedback = feedback
        #: The name the standby's WAL receiver gives the primary (``synchronous_standby_names``).
        if not application_name.isidentifier() or not application_name.isascii():
            raise ValueError(f"application_name must be an ASCII identifier: {application_name!r}")
        self.application_name = application_name
        #: True once ``promote()`` ended recovery: a primary now.
        self.promoted = False

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
            # the WAL receiver's application_name (primary_conninfo names none)
            "cluster_name": f"'{self.application_name}'",
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

    # --- synchronous replication and failover ---------------------------------------------------

    async def make_synchronous(self, mode: str = "on", seconds: float = 30) -> None:
        """Make the primary wait for this standby at every commit: ``synchronous_standby_names``
        naming it and ``synchronous_commit = mode`` (``on``: until the standby flushed the WAL;
        ``remote_apply``: until it replayed it, so its reads see the commit too); returns once
        the primary reports the standby as ``sync``."""
        if mode not in SYNC_MODES:
            raise ValueError(f"mode must be one of {', '.join(SYNC_MODES)}, not {mode!r}")
        await self._configure_primary(f'"{self.application_name}"', mode)
        deadline = time.monotonic() + seconds
        query = (
            "SELECT sync_state FROM pg_stat_replication "
            f"WHERE application_name = '{self.application_name}'"
        )
        while await self._sql(query, primary=True) != "sync":
            if time.monotonic() > deadline:
                raise TimeoutError(f"the primary does not list {self.application_name} as sync")
            await asyncio.sleep(0.02)

    async def make_asynchronous(self) -> None:
        """Stop waiting for the standby at commit (the primary's defaults again)."""
        await self._configure_primary("", "on")

    async def _configure_primary(self, names: str, mode: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.primary.url("postgres"), timeout=10)
        try:
            await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
            await conn.execute(f"ALTER SYSTEM SET synchronous_commit = '{mode}'")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    def promote(self, timeout: float = 60) -> float:
        """End recovery (``pg_ctl promote -w``): the standby takes writes from now on; returns
        the seconds it took."""
        started = time.monotonic()
        self._run(
            [
                self.bin["pg_ctl"],
                "promote",
                "-w",
                "-t",
                str(int(timeout)),
                "-D",
                str(self.data_dir),
            ],
            timeout=timeout + 30,
        )
        self.promoted = True
        return time.monotonic() - started


def failover_url(*servers: PostgresService, database: str = "postgres", **query: str) -> str:
    """A multi-host ``postgresql://`` URL over ``servers`` (in order) that connects to the one
    accepting writes (``target_session_attrs=read-write``, unless ``query`` says otherwise)."""
    if not servers:
        raise ValueError("failover_url needs at least one server")
    hosts = ",".join(f"{s.host}:{s.port}" for s in servers)
    query = {"target_session_attrs": "read-write", **query}
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return f"postgresql://{servers[0].user}@{hosts}/{database}?{qs}"


def crash(server: PostgresService) -> int:
    """Kill ``server``'s postmaster and every process it started with SIGKILL, as a power cut
    would (no shutdown, no goodbye to clients), and free its shared memory; returns the
    postmaster's pid. The data directory stays (``server.stop()`` removes it)."""
    pid_file = server.data_dir / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    postmaster = int(lines[0])
    children = _children(postmaster)
    for pid in (postmaster, *children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in (postmaster, *children)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"PostgreSQL processes of {postmaster} survived SIGKILL")
        time.sleep(0.005)
    # pg_ctl must not take a later process with a reused pid for this postmaster
    pid_file.unlink(missing_ok=True)
    shm = lines[6].split() if len(lines) > 6 else []
    if len(shm) == 2:  # "<key> <id>": the System V segment nobody detaches from now
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["ipcrm", "-m", shm[1]], capture_output=True, timeout=10)
    return postmaster


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, ...
        if int(fields[1]) == parent:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
