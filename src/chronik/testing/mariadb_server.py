"""A MariaDB test service: ``mariadbd`` from Debian's ``mariadb-server`` on a free loopback port,
its data directory, socket, pid file and log in its temp dir.

``mariadb-install-db`` creates the data directory once (``--auth-root-authentication-method=
normal``: root logs in over TCP without a password); the server runs as root (``--user=root``),
listens on 127.0.0.1 only, and skips name resolution and the grant tables' host lookups.

Test settings, chosen for speed, not durability (documented here, never for production):
``innodb_flush_log_at_trx_commit=2`` (the redo log is written at each commit but flushed to
disk about once a second: a crash of the machine, not of the server, may lose the last second),
``sync_binlog=0`` and no binary log at all, ``innodb_doublewrite=0``, a 64 MiB buffer pool.
``durable=True`` keeps the defaults instead (``innodb_flush_log_at_trx_commit=1``).
``crash()`` kills the server with SIGKILL and starts it again on the same port and data::

    with MariaDBService() as server:
        url = server.url("t1")  # mysql://root@127.0.0.1:PORT/t1
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlencode

from chronik.testing.brokers import _ProcessService
from chronik.testing.service_base import ServiceNotStarted

__all__ = ["MariaDBService"]


class MariaDBService(_ProcessService):
    """``mariadbd`` with root on TCP without a password, data in the temp dir."""

    name = "mariadb"
    binaries = ("mariadbd", "mariadb-install-db")
    search_paths = ("/usr/sbin",)
    apt_packages = ("mariadb-server",)

    def __init__(self, *, durable: bool = False) -> None:
        super().__init__()
        self.durable = durable

    def url(self, database: str = "chronik", **query: str) -> str:
        """The ``mysql://`` URL of ``database`` on this server (store options in ``query``)."""
        tail = f"?{urlencode(query)}" if query else ""
        return f"mysql://root@{self.host}:{self.port}/{database}{tail}"

    def find_binaries(self) -> dict[str, str] | None:
        """``mariadbd`` lives in /usr/sbin, ``mariadb-install-db`` in /usr/bin."""
        found: dict[str, str] = {}
        for binary, where in (("mariadbd", "/usr/sbin"), ("mariadb-install-db", "/usr/bin")):
            path = os.path.join(where, binary)
            if not os.access(path, os.X_OK):
                return None
            found[binary] = path
        return found

    def _prepare(self, workdir: Path) -> None:
        data = workdir / "data"
        data.mkdir()
        done = subprocess.run(
            [
                self.bin["mariadb-install-db"],
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise ServiceNotStarted(
                f"mariadb-install-db failed: {(done.stderr or done.stdout).strip()[-800:]}"
            )

    def _args(self) -> list[str]:
        assert self.workdir is not None
        w = self.workdir
        args = [
            self.bin["mariadbd"],
            "--no-defaults",
            f"--datadir={w / 'data'}",
            f"--socket={w / 'mariadb.sock'}",
            f"--pid-file={w / 'mariadb.pid'}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            "--user=root",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=64M",
            "--max-connections=500",
            "--character-set-server=utf8mb4",
            f"--log-error={w / 'server.log'}",
        ]
        if not self.durable:
            args += [
                "--innodb-flush-log-at-trx-commit=2",
                "--sync-binlog=0",
                "--innodb-doublewrite=0",
            ]
        return args

    def _start(self) -> None:
        self._spawn(self._args())

    def _ready(self) -> bool:
        """The server sends its handshake (InnoDB recovery and grant tables are done)."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection((self.host, self.port), 2) as s,
        ):
            s.settimeout(2)
            greeting = s.recv(128)
            return len(greeting) > 5 and greeting[4] == 10  # protocol version 10, not an error
        return False

    def crash(self) -> None:
        """SIGKILL the server (no shutdown, no final flush), then start it on the same data."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        self._start()
