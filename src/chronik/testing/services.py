"""Real servers for tests and benchmarks: started on 127.0.0.1, on a free port, in a temp dir.

Each service is a ``Service``: find its binaries (installing the Debian package with apt-get when
they are missing and we are root), start it, hand out URLs, restart it, stop it and remove its
files. PostgreSQL (``initdb``/``pg_ctl``), NATS (``nats-server -js``) and RabbitMQ (a node of
its own: own node name, ports, epmd, data and log dirs) each are a subclass with
``binaries``/``apt_packages`` and their own ``_start``/``_stop``::

    with PostgresService() as pg:
        url = pg.url("postgres")
    with NatsService() as nats:
        url = nats.url()

``ServiceUnavailable`` says why a service cannot start (no binaries, no root for apt, a crash).
"""

from __future__ import annotations

import abc
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Self

if TYPE_CHECKING:
    from chronik.testing.brokers import NatsService, RabbitMQService

__all__ = [
    "NatsService",
    "PostgresService",
    "RabbitMQService",
    "Service",
    "ServiceUnavailable",
    "apt_install",
    "free_port",
    "require_services",
]


class ServiceUnavailable(RuntimeError):
    """A service could not be found, installed or started."""


def require_services() -> bool:
    """True when a service that cannot start must fail the run (CHRONIK_REQUIRE_SERVICES=1)."""
    return os.environ.get("CHRONIK_REQUIRE_SERVICES", "") == "1"


def unavailable(message: str) -> NoReturn:
    """End the calling test because a service or tool it needs is missing: a failure with
    CHRONIK_REQUIRE_SERVICES=1 (CI), a skip otherwise."""
    import pytest

    if require_services():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def apt_install(packages: list[str]) -> None:
    """Install Debian packages (root only); raises ServiceUnavailable when that is impossible."""
    if os.geteuid() != 0:
        raise ServiceUnavailable(f"{' '.join(packages)} missing and not root to apt-get it")
    if shutil.which("apt-get") is None:
        raise ServiceUnavailable(f"{' '.join(packages)} missing and no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise ServiceUnavailable(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


class Service(abc.ABC):
    """A server process owned by this object: ``start()``, ``restart()``, ``stop()``.

    Subclasses say which binaries they need (``binaries``, searched in ``search_paths`` then
    on PATH) and which Debian packages provide them (``apt_packages``).
    """

    name: ClassVar[str]
    binaries: ClassVar[tuple[str, ...]]
    search_paths: ClassVar[tuple[str, ...]] = ()
    apt_packages: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.port = 0
        self.host = "127.0.0.1"
        self.workdir: Path | None = None
        self.bin: dict[str, str] = {}
        self._running = False

    # --- binaries ------------------------------------------------------------------------------

    def find_binaries(self) -> dict[str, str] | None:
        """Paths of every binary in ``binaries``, or None if one is missing."""
        for pattern in self.search_paths:
            for directory in sorted(glob.glob(pattern), reverse=True):  # newest version first
                found = {b: os.path.join(directory, b) for b in self.binaries}
                if all(os.access(p, os.X_OK) for p in found.values()):
                    return found
        on_path = {b: shutil.which(b) for b in self.binaries}
        if all(on_path.values()):
            return {b: p for b, p in on_path.items() if p is not None}
        return None

    def ensure_binaries(self) -> dict[str, str]:
        """The binaries, installing ``apt_packages`` when they are missing."""
        found = self.find_binaries()
        if found is None:
            apt_install(list(self.apt_packages))
            found = self.find_binaries()
        if found is None:
            raise ServiceUnavailable(f"{self.name}: {', '.join(self.binaries)} not found")
        return found

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Find binaries, make a temp dir, pick a port and start the server; idempotent."""
        if self._running:
            return self
        self.bin = self.ensure_binaries()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"chronik-{self.name}-"))
            self.port = free_port()
            self._prepare(self.workdir)
        self._start()
        self._running = True
        return self

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        if self._running:
            self._stop()
            self._running = False
        self._start()
        self._running = True

    def stop(self) -> None:
        """Stop the server and delete its files."""
        if self._running:
            with contextlib.suppress(Exception):
                self._stop()
            self._running = False
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @property
    def running(self) -> bool:
        """True between a successful start and stop."""
        return self._running

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"

    @abc.abstractmethod
    def _prepare(self, workdir: Path) -> None:
        """Create the server's data files in ``workdir`` (once)."""

    @abc.abstractmethod
    def _start(self) -> None:
        """Start the server on ``self.port``; return once it accepts connections."""

    @abc.abstractmethod
    def _stop(self) -> None:
        """Stop the server."""


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
            raise ServiceUnavailable(f"{args[0]} failed: {exc}") from exc
        if done.returncode != 0:
            raise ServiceUnavailable(
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
                raise ServiceUnavailable(f"no {self.user!r} OS user to run PostgreSQL") from None
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
        if not _wait_port(self.port, 30):
            raise ServiceUnavailable(f"PostgreSQL did not listen on port {self.port}")

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
    """NatsService and RabbitMQService live in ``chronik.testing.brokers`` (loaded on use)."""
    if name in ("NatsService", "RabbitMQService"):
        from chronik.testing import brokers

        return getattr(brokers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
