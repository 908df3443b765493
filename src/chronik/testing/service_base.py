"""The base of the real servers for tests: ``Service`` and the helpers every service shares.

A ``Service`` finds its binaries (installing the Debian package with apt-get when they are
missing and we are root), starts in a temp dir on a free port, restarts and stops;
``ServiceNotStarted`` says why it could not start. The servers themselves live in
``chronik.testing.services`` (PostgreSQL) and ``chronik.testing.brokers`` (NATS, RabbitMQ).
Imports the standard library only (pytest lazily, in ``unavailable``).
"""

from __future__ import annotations

import abc
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, NoReturn, Self

__all__ = [
    "Service",
    "ServiceNotStarted",
    "apt_install",
    "free_port",
    "require_services",
    "unavailable",
    "wait_port",
]


class ServiceNotStarted(RuntimeError):
    """A test service could not be found, installed or started (not a chronik error: that is
    ``chronik.errors.ServiceNotStarted``, a remote service that is down)."""


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
    """Install Debian packages (root only); raises ServiceNotStarted when that is impossible."""
    if os.geteuid() != 0:
        raise ServiceNotStarted(f"{' '.join(packages)} missing and not root to apt-get it")
    if shutil.which("apt-get") is None:
        raise ServiceNotStarted(f"{' '.join(packages)} missing and no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=300"]  # several test sessions may install at once
    for cmd in (["apt-get", *wait, "update"], ["apt-get", *wait, "install", "-y", *packages]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise ServiceNotStarted(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")


def wait_port(port: int, timeout: float) -> bool:
    """True once 127.0.0.1:``port`` accepts a connection, False after ``timeout`` seconds."""
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
            raise ServiceNotStarted(f"{self.name}: {', '.join(self.binaries)} not found")
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
