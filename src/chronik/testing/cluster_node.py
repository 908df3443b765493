"""One ``chronik serve`` process of a local cluster (``chronik.testing.local_cluster``): its
config file, loopback ports and log; start, /readyz, kill -9, SIGTERM and reap.

Imports the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["Node", "NodeFailed"]


class NodeFailed(RuntimeError):
    """A node exited or did not become ready (the message carries the end of its log)."""


class Node:
    """One ``chronik serve`` process of the cluster: its config, ports, log and process."""

    def __init__(
        self,
        name: str,
        role: str,
        config: Path,
        *,
        grpc_port: int,
        http_port: int,
        app_dir: Path,
        grace: float,
        env: dict[str, str],
    ) -> None:
        self.name = name
        self.role = role
        self.config = config
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.app_dir = app_dir
        self.grace = grace
        self.env = env
        self.log = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def grpc(self) -> str:
        """The gRPC address (``host:port``)."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http(self) -> str:
        """The HTTP base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        """The running process's id (None when it is not running)."""
        return self.proc.pid if self.alive and self.proc is not None else None

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start ``chronik serve`` (again after a kill); ``wait_ready`` waits for /readyz."""
        if self.alive:
            raise NodeFailed(f"{self.name} is already running (pid {self.pid})")
        self.starts += 1
        args = [sys.executable, "-m", "chronik.cli", "serve", "--config", str(self.config)]
        args += ["--grace", f"{self.grace:g}", "--app-dir", str(self.app_dir)]
        with open(self.log, "ab") as log:
            log.write(f"\n--- start {self.starts} ---\n".encode())
            self.proc = subprocess.Popen(
                args,
                cwd=self.config.parent,
                env={**os.environ, "CHRONIK_STORE": "", **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches the owner, which stops us
            )

    def ready(self) -> bool:
        """True when GET /readyz answers 200."""
        try:
            with urllib.request.urlopen(f"{self.http}/readyz", timeout=2.0) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait for /readyz 200; the monotonic time it answered. NodeFailed if the process
        exits or is not ready within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                code = None if self.proc is None else self.proc.returncode
                raise NodeFailed(f"{self.name} exited with {code}:\n{self.log_tail()}")
            if self.ready():
                return time.monotonic()
            if time.monotonic() > deadline:
                raise NodeFailed(f"{self.name} not ready within {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill9(self) -> None:
        """SIGKILL the process and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM: in-flight calls get the grace period)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def reap(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the process to end, then SIGKILL it; its exit code."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self.kill9()
            return self.proc.returncode

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the node's log."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.alive else "stopped"
        return f"<Node {self.name} {self.role} gRPC {self.grpc} HTTP {self.http} {state}>"
