"""A Redis test service: ``redis-server`` from Debian on a free port, every file in its temp dir.

AOF on with ``appendfsync always`` (every acknowledged write is on disk before the answer),
no RDB snapshots (``--save ""``), protected mode off on 127.0.0.1 only. ``crash()`` kills the
server with SIGKILL and starts it again on the same port and data, as a power cut of the
process would; ``restart()`` stops it politely first::

    with RedisService() as server:
        url = server.url(prefix="t1")
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path
from urllib.parse import urlencode

from chronik.testing.brokers import _ProcessService

__all__ = ["RedisService"]


class RedisService(_ProcessService):
    """``redis-server`` with AOF (``appendfsync`` as given, ``always`` by default)."""

    name = "redis"
    binaries = ("redis-server",)
    apt_packages = ("redis-server",)

    def __init__(self, *, appendfsync: str = "always") -> None:
        super().__init__()
        self.appendfsync = appendfsync

    def url(self, db: int = 0, **query: str) -> str:
        """The ``redis://`` URL of this server (store options such as ``prefix`` in ``query``)."""
        tail = f"?{urlencode(query)}" if query else ""
        return f"redis://{self.host}:{self.port}/{db}{tail}"

    def _prepare(self, workdir: Path) -> None:
        (workdir / "data").mkdir()

    def _start(self) -> None:
        assert self.workdir is not None
        self._spawn(
            [
                self.bin["redis-server"],
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--protected-mode",
                "no",
                "--dir",
                str(self.workdir / "data"),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                "",
                "--databases",
                "16",
            ]
        )

    def _ready(self) -> bool:
        """The server answers PING (it loads its AOF before that)."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection((self.host, self.port), 2) as s,
        ):
            s.sendall(b"PING\r\n")
            s.settimeout(2)
            return s.recv(16).startswith(b"+PONG")
        return False

    def crash(self) -> None:
        """SIGKILL the server (no shutdown, no final fsync), then start it on the same data."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        self._start()
