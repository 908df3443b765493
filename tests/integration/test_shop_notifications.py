"""The shop's outbox end to end: chronik serve publishes, a second process is notified."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import chronik
from chronik.sdk import Client

ROOT = Path(__file__).resolve().parents[2]


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_line(proc: subprocess.Popen[str], pattern: str) -> re.Match[str]:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # bounded by the processes' own lifetimes and pytest's timeout
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no {pattern!r} in {seen}")


async def test_registration_reaches_the_notifications_process(
    tmp_path: Path, nats_url: str
) -> None:
    """CreateCustomer -> outbox -> NATS -> the notifications process sends one welcome email."""
    config = tmp_path / "chronik.yaml"
    config.write_text(
        "app: examples.shop.app:build_app\nprojections: examples.shop.app:projections\n"
        f"http: {{enabled: false}}\ntransport: '{nats_url}'\n"
    )
    notify = start(
        [
            "-m",
            "examples.shop.services.notifications",
            "--transport",
            nats_url,
            "--store",
            f"sqlite:///{tmp_path}/notifications.db",
        ],
        tmp_path,
    )
    server = start(
        [
            "-m",
            "chronik.cli",
            "serve",
            "--config",
            str(config),
            "--store",
            f"sqlite:///{tmp_path}/events.db",
            "--port",
            "0",
        ],
        tmp_path,
    )
    try:
        wait_line(notify, "notifications listening")
        port = wait_line(server, r"gRPC:\s+127\.0\.0\.1:(\d+)").group(1)
        wait_line(server, "outbox:  publishing to nats://")
        async with Client(f"127.0.0.1:{port}") as client:
            await client.dispatch(
                chronik.Command(
                    domain="customer",
                    aggregate_id="c7",
                    type="CreateCustomer",
                    payload={"name": "Ada", "email": "ada@example.com"},
                )
            )
        wait_line(notify, r"welcome email to ada@example\.com \(customer c7\)")
    finally:
        for proc in (server, notify):
            proc.send_signal(signal.SIGTERM)
        for proc in (server, notify):
            try:
                proc.communicate(timeout=30)  # drains the pipe: a full one would block the exit
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    assert server.returncode == 0 and notify.returncode == 0
