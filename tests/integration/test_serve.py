"""`make run`'s server as a process: it starts, serves the shop, and stops cleanly on SIGTERM."""

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


async def test_serve_the_shop_then_stop_on_sigterm(tmp_path: Path) -> None:
    """chronik serve with examples/shop/chronik.yaml handles commands and exits 0 on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHRONIK_STORE": ""}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chronik.cli",
            "serve",
            "--config",
            str(ROOT / "examples" / "shop" / "chronik.yaml"),
            "--port",
            "0",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert "sqlite:///data/events.db" in lines[0] and "customer, transaction" in lines[1]
        assert "receipts, customer_summary, loyalty" in lines[2]
        match = re.search(r"gRPC:\s+127\.0\.0\.1:(\d+)", lines[3])
        assert match, lines
        async with Client(f"127.0.0.1:{match.group(1)}") as client:
            result = await client.dispatch(
                chronik.Command(
                    domain="customer",
                    aggregate_id="c1",
                    type="CreateCustomer",
                    payload={"name": "Ada", "email": "ada@x"},
                )
            )
            assert [e.type for e in result.events] == ["CustomerCreated"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in out
        assert (tmp_path / "data" / "events.db").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
