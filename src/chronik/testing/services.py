"""Real servers for tests and benchmarks: started on 127.0.0.1, on a free port, in a temp dir.

Each service is a ``Service`` (``chronik.testing.service_base``): find its binaries (installing
the Debian package with apt-get when they are missing and we are root), start it, hand out URLs,
restart it, stop it and remove its files. PostgreSQL (``initdb``/``pg_ctl``, here), NATS
(``nats-server -js``) and RabbitMQ (a node of its own: own node name, ports, epmd, data and log
dirs; both in ``chronik.testing.brokers``) each are a subclass with ``binaries``/``apt_packages``
and their own ``_start``/``_stop``; this module exports them all::

    with PostgresService() as pg:
        url = pg.url("postgres")
    with NatsService() as nats:
        url = nats.url()

``ServiceNotStarted`` says why a service cannot start (no binaries, no root for apt, a crash);
``ServiceUnavailable`` is its deprecated old name.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import warnings
from pathlib import Path
from typing import Any

from chronik.testing.brokers import NatsService, RabbitMQService
from chronik.testing.service_base import (
    Service,
    ServiceNotStarted,
    apt_install,
    free_port,
    require_services,
    unavailable,
    wait_port,
)

__all__ = [
    "NatsService",
    "PostgresService",
    "RabbitMQService",
    "Service",
    "ServiceNotStarted",
    "apt_install",
    "free_port",
    "require_services",
    "unavailable",
]


class PostgresService(Service):
    """A throwaway PostgreSQL cluster run as the ``postgres`` OS user (trust auth, TCP only).

    ``durable=False`` turns fsync off, for fast tests; benchmarks keep the defaults (fsync on,
    synchronous_commit on).
    """

    name = "postgresql"
    binaries = ("initdb", "pg_ctl", "postgres")
    search_paths = ("/usr/lib/postgresql/*/bin",)
    apt_packages = ("postgresql",)
    user = "postgres"

    def __init__(self, *, durable: bool = True, max_connections: int = 200) -> None:
        super().__init__()
        self.durable = durable
        self.max_connections = max_connections

    def url(self, database: str = "postgres", **query: str) -> str:
        """A ``postgresql://`` URL of a database on this server, with query options."""
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        base = f"postgresql://{self.user}@{self.host}:{self.port}/{database}"
        return f"{base}?{qs}" if qs else base

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        as_other = os.geteuid() == 0 and pwd.getpwuid(os.geteuid()).pw_name != self.user
        try:
            done = subprocess.run(
                args,
                capture_output=True,
                text=True,
                timeout=timeout,
                user=self.user if as_other else None,
                cwd=self.workdir,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServiceNotStarted(f"{args[0]} failed: {exc}") from exc
        if done.returncode != 0:
            raise ServiceNotStarted(
                f"{' '.join(args)} exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-800:]}"
            )
        return done

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        assert self.workdir is not None
        return self.workdir / "data"

    def _prepare(self, workdir: Path) -> None:
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(self.user)
            except KeyError:
                raise ServiceNotStarted(f"no {self.user!r} OS user to run PostgreSQL") from None
            os.chown(workdir, user.pw_uid, user.pw_gid)
        self._run(
            [
                self.bin["initdb"],
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            timeout=120,
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{workdir}'",
            "max_connections": str(self.max_connections),
            "shared_buffers": "'128MB'",
            "logging_collector": "off",
        }
        if not self.durable:
            # Commits still reach the WAL file (the OS keeps it): a killed backend or a restart
            # loses nothing; only an OS crash could.
            settings |= {"fsync": "off", "full_page_writes": "off"}
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# chronik test service\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def _start(self) -> None:
        assert self.workdir is not None
        log = self.workdir / "server.log"
        self._run(
            [
                self.bin["pg_ctl"],
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(log),
            ],
            timeout=90,
        )
        if not wait_port(self.port, 30):
            raise ServiceNotStarted(f"PostgreSQL did not listen on port {self.port}")

    def _stop(self) -> None:
        self._run(
            [self.bin["pg_ctl"], "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data_dir)],
            timeout=90,
        )

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server log (for failure messages)."""
        if self.workdir is None:
            return ""
        try:
            return (self.workdir / "server.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def __getattr__(name: str) -> Any:
    """``ServiceUnavailable``: the deprecated name of ``ServiceNotStarted`` (it shadowed
    ``chronik.errors.ServiceUnavailable``)."""
    if name == "ServiceUnavailable":
        warnings.warn(
            "chronik.testing.services.ServiceUnavailable is deprecated; use ServiceNotStarted",
            DeprecationWarning,
            stacklevel=2,
        )
        return ServiceNotStarted
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
