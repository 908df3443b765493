"""NATS and RabbitMQ test services (``chronik.testing.services`` exports them too).

Both run as child processes in their own session, on free ports, with every file in the
service's temp dir; ``stop()`` ends the whole process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import ClassVar

from chronik.testing.service_base import Service, ServiceNotStarted, free_port, wait_port

__all__ = ["NatsService", "RabbitMQService"]


class _ProcessService(Service):
    """A server run as a child process of ours (its own session, so we can stop all of it)."""

    start_timeout: ClassVar[float] = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> None:
        assert self.workdir is not None
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            self.process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceNotStarted(f"{self.name}: cannot run {args[0]}: {exc}") from exc
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceNotStarted(
                    f"{self.name} exited with {self.process.returncode}: {self.log_tail()}"
                )
            if wait_port(self.port, 0.2) and self._ready():
                return
        self._kill()
        raise ServiceNotStarted(
            f"{self.name} did not start within {self.start_timeout:.0f}s: {self.log_tail()}"
        )

    def _ready(self) -> bool:
        """True once the server accepts work (beyond listening)."""
        return True

    def _kill(self, timeout: float = 30) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def _stop(self) -> None:
        self._kill()

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server log (for failure messages)."""
        if self.workdir is None:
            return ""
        try:
            return (self.workdir / "server.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class NatsService(_ProcessService):
    """``nats-server -js`` on 127.0.0.1 with its JetStream store in the temp dir."""

    name = "nats"
    binaries = ("nats-server",)
    apt_packages = ("nats-server",)

    def url(self) -> str:
        """The ``nats://`` URL of this server."""
        return f"nats://{self.host}:{self.port}"

    def _prepare(self, workdir: Path) -> None:
        (workdir / "jetstream").mkdir()

    def _start(self) -> None:
        assert self.workdir is not None
        self._spawn(
            [
                self.bin["nats-server"],
                "-js",
                "-a",
                self.host,
                "-p",
                str(self.port),
                "-sd",
                str(self.workdir / "jetstream"),
                "--http_port",
                "0",
            ]
        )


class RabbitMQService(_ProcessService):
    """A RabbitMQ node of our own: node name, AMQP, distribution and epmd ports, data and
    logs all private to the temp dir, so it never meets a system node. Runs as root (the
    Erlang cookie lives in the temp dir). No plugins: it starts in a few seconds."""

    name = "rabbitmq"
    binaries = ("rabbitmq-server", "rabbitmqctl")
    search_paths = ("/usr/lib/rabbitmq/bin",)
    apt_packages = ("rabbitmq-server",)

    def url(self) -> str:
        """The ``amqp://`` URL of this node (guest user, allowed from 127.0.0.1)."""
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    def _prepare(self, workdir: Path) -> None:
        self.dist_port = free_port()
        self.epmd_port = free_port()
        (workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {self.host}:{self.port}\n"
            "loopback_users = none\n"
            "log.console = false\n"
            "log.file.level = warning\n"
            "vm_memory_high_watermark.relative = 0.8\n"
            "disk_free_limit.absolute = 10MB\n"
        )
        (workdir / "enabled_plugins").write_text("[].\n")
        cookie = workdir / ".erlang.cookie"
        cookie.write_text(os.urandom(16).hex())
        cookie.chmod(0o400)

    def _env(self) -> dict[str, str]:
        assert self.workdir is not None
        w = str(self.workdir)
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": w,
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": f"chronik{self.port}@localhost",
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": f"{w}/mnesia",
            "RABBITMQ_LOG_BASE": f"{w}/log",
            "RABBITMQ_CONFIG_FILE": f"{w}/rabbitmq.conf",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{w}/advanced.config",
            "RABBITMQ_CONF_ENV_FILE": f"{w}/rabbitmq-env.conf",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{w}/enabled_plugins",
            "RABBITMQ_PID_FILE": f"{w}/rabbitmq.pid",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+S 2:2 +sbwt none +sbwtdcpu none +sbwtdio none",
        }

    def _start(self) -> None:
        self._spawn([self.bin["rabbitmq-server"]], env=self._env())

    def _ready(self) -> bool:
        """The AMQP listener opens last in the boot; answer its protocol header to be sure."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection((self.host, self.port), 2) as s,
        ):
            s.sendall(b"AMQP\x00\x00\x09\x01")
            s.settimeout(2)
            return s.recv(8).startswith(b"\x01")  # connection.start frame
        return False

    def _stop(self) -> None:
        self._kill()
        epmd = shutil.which("epmd") or "/usr/bin/epmd"
        if os.access(epmd, os.X_OK):  # our private epmd outlives the node; end it too
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    [epmd, "-port", str(self.epmd_port), "-kill"],
                    capture_output=True,
                    timeout=10,
                )
