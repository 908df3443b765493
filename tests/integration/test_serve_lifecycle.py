"""`chronik serve` as a real process: start-up failures are one line and exit 1; a stuck
projection neither holds the start (ports bind, health answers) nor the stop (SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import chronik
from chronik.testing.services import free_port

ROOT = Path(__file__).resolve().parents[2]

STUCK_APP = """
import asyncio
from chronik.projections import Projection


def projections(app):
    p = Projection("stuck")

    @p.on("thing.made")
    async def made(event, rm):
        await asyncio.sleep(3600)  # a handler that never returns

    return [p]
"""


def config(tmp_path: Path, http_port: int, grpc_port: int = 0, **extra: str) -> Path:
    lines = [
        f"store: sqlite:///{tmp_path}/events.db",
        f"grpc: {{host: 127.0.0.1, port: {grpc_port}}}",
        f"http: {{host: 127.0.0.1, port: {http_port}}}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    path = tmp_path / "chronik.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def serve(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}", "CHRONIK_STORE": ""}
    return subprocess.Popen(
        [sys.executable, "-m", "chronik.cli", "serve", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another process listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def fails_in_one_line(proc: subprocess.Popen[str]) -> str:
    """The one ``error:`` line the process ended with (exit 1, no traceback)."""
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in out + err, err
    errors = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().endswith(errors[0]), err  # log lines may precede
    return errors[0]


def test_a_taken_http_port_is_one_error_line_and_exit_1(tmp_path: Path, taken: int) -> None:
    """HTTP port held by another process: `error: ...` naming the port, exit 1."""
    line = fails_in_one_line(serve(tmp_path, "--config", str(config(tmp_path, taken))))
    assert str(taken) in line


def test_a_taken_grpc_port_is_one_error_line_and_exit_1(tmp_path: Path, taken: int) -> None:
    """gRPC port held by another process: `error: ...` naming the port, exit 1."""
    path = config(tmp_path, free_port(), grpc_port=taken)
    line = fails_in_one_line(serve(tmp_path, "--config", str(path)))
    assert str(taken) in line


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"nonsense": "1"}, "invalid configuration"),
        ({"app": "no_such_module:build"}, "no_such_module"),
    ],
)
def test_bad_config_and_app_import_errors_are_one_line(
    tmp_path: Path, extra: dict[str, str], expected: str
) -> None:
    """An unknown config key or an app module that cannot be imported: one line, exit 1."""
    path = config(tmp_path, free_port(), **extra)
    assert expected in fails_in_one_line(serve(tmp_path, "--config", str(path)))


def test_an_unreachable_store_is_one_error_line(tmp_path: Path) -> None:
    """A store that cannot be opened (a directory where the file should be): exit 1."""
    (tmp_path / "events.db").mkdir()
    path = config(tmp_path, free_port())
    assert "events.db" in fails_in_one_line(serve(tmp_path, "--config", str(path)))


async def test_a_stuck_projection_holds_neither_start_nor_sigterm(tmp_path: Path) -> None:
    """With a stored event whose handler never returns, serve still binds and answers
    /healthz; SIGTERM then ends it (exit 0) within the grace period plus 5 s."""
    (tmp_path / "stuckapp.py").write_text(STUCK_APP)
    async with chronik.open_store(f"sqlite:///{tmp_path}/events.db") as store:
        await store.append(chronik.StreamId("thing", "t1"), [chronik.EventData("thing.made", {})])
    port = free_port()
    path = config(tmp_path, port, projections="stuckapp:projections")
    proc = serve(tmp_path, "--config", str(path), "--grace", "2")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with asyncio.timeout(30):
                while True:
                    assert proc.poll() is None, proc.communicate()
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # the handler is now inside its sleep
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, (out, err)
        assert time.monotonic() - started < 2 + 5, out
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
