"""The chronik command against a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import chronik
from chronik.cli import _build

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A store with two streams: customer/c1 (3 events) and order/o1 (1 event)."""
    url = f"sqlite:///{tmp_path}/cli.db"

    async def fill() -> None:
        async with chronik.open_store(url) as store:
            c1 = chronik.StreamId("customer", "c1")
            await store.append(
                c1,
                [
                    chronik.EventData(
                        "customer.registered", {"name": "Ada"}, {"correlation_id": "r-1"}
                    )
                ],
            )
            await store.append(
                c1, [chronik.EventData("customer.renamed", {"name": f"A{i}"}) for i in range(2)]
            )
            await store.append(
                chronik.StreamId("order", "o1"),
                [chronik.EventData("blob", b"\x00\x01", content_type="a/b")],
            )

    asyncio.run(fill())
    return url


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(_build(), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_db_init_creates_the_schema(tmp_path: Path) -> None:
    """db init creates a new store file and says so."""
    code, out, _ = invoke("db", "init", "--store", f"sqlite:///{tmp_path}/new.db")
    assert code == 0 and "ready" in out and (tmp_path / "new.db").exists()


def test_streams_list_table_and_json(url: str) -> None:
    """streams list shows each stream with its version, as a table or JSON lines."""
    code, out, _ = invoke("streams", "list", "--store", url)
    assert code == 0 and "customer/c1" in out and "order/o1" in out
    code, out, _ = invoke("streams", "list", "--store", url, "--json", "--domain", "customer")
    assert [json.loads(line) for line in out.splitlines()] == [
        {"stream": "customer/c1", "version": 2}
    ]


def test_events_read_forward_from_backward_and_json(url: str) -> None:
    """events read honours --from, --backward and --limit, and --json carries every field."""
    code, out, _ = invoke("events", "read", "customer/c1", "--store", url, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["sequence"] for r in rows] == [0, 1, 2]
    first = rows[0]
    assert first["payload"] == {"name": "Ada"} and first["metadata"] == {"correlation_id": "r-1"}
    assert first["type"] == "customer.registered" and first["position"] == "1"
    assert first["recorded_at"].endswith("+00:00") and len(first["event_id"]) == 36
    _, out, _ = invoke("events", "read", "customer/c1", "--store", url, "--json", "--from", "1")
    assert [json.loads(x)["sequence"] for x in out.splitlines()] == [1, 2]
    _, out, _ = invoke(
        "events", "read", "customer/c1", "--store", url, "--json", "--backward", "--limit", "2"
    )
    assert [json.loads(x)["sequence"] for x in out.splitlines()] == [2, 1]
    _, out, _ = invoke("events", "read", "order/o1", "--store", url, "--json")
    assert json.loads(out)["payload"] == "AAE="  # base64 of a non-JSON payload
    code, out, _ = invoke("events", "read", "customer/c1", "--store", url)
    assert code == 0 and "customer.renamed" in out


def test_bad_input_is_one_line_and_non_zero(url: str) -> None:
    """A bad stream id or store URL prints one error line, no traceback, and exits 1."""
    for args in (
        ("events", "read", "nodomain", "--store", url),
        ("events", "read", "Bad/x", "--store", url),
        ("streams", "list", "--store", "nosuch://x"),
    ):
        code, out, err = invoke(*args)
        assert code == 1 and err.startswith("error:") and "Traceback" not in out + err


def _wait_until_open(pid: int, path: str, timeout: float = 20.0) -> None:
    """Wait until process ``pid`` has the file ``path`` open (it started up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{pid}/fd")
            if any(os.readlink(fd) == path for fd in fds.iterdir()):
                return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never opened {path}")


def test_tail_follows_appends_from_another_process(url: str) -> None:
    """events tail in a subprocess prints events appended after it started, then stops."""
    env = {**os.environ, "CHRONIK_STORE": url, "PYTHONPATH": str(ROOT / "src")}
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chronik.cli",
            "events",
            "tail",
            "--json",
            "--count",
            "2",
            "--type",
            "live.one",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_until_open(tail.pid, url.removeprefix("sqlite:///"))
    time.sleep(0.5)  # let it read the head and subscribe there

    async def append() -> None:
        async with chronik.open_store(url) as store:
            for i in range(3):
                await store.append(
                    chronik.StreamId("live", "l1"), [chronik.EventData("live.one", {"i": i})]
                )

    asyncio.run(append())
    out, err = tail.communicate(timeout=30)
    assert tail.returncode == 0, err
    assert [json.loads(line)["payload"] for line in out.splitlines()] == [{"i": 0}, {"i": 1}]


def test_version_flag() -> None:
    """--version prints the package version."""
    code, out, _ = invoke("--version")
    assert code == 0 and chronik.__version__ in out


@pytest.mark.parametrize(
    "args",
    [
        ("streams", "list"),
        ("events", "read", "customer/c1"),
        ("projections", "status"),
        ("projections", "dead-letters", "list"),
        ("outbox", "status"),
    ],
)
def test_read_only_commands_never_create_a_store(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A read-only command on a missing SQLite file says `error: no store at PATH`, exits 1
    and creates neither the file nor its directories."""
    path = tmp_path / "typo" / "x.db"
    code, out, err = invoke(*args, "--store", f"sqlite:///{path}")
    assert code == 1 and err.strip() == f"error: no store at {path}", (out, err)
    assert not (tmp_path / "typo").exists()


def test_serve_app_dir_that_is_not_a_directory(tmp_path: Path) -> None:
    """serve --app-dir on a missing folder exits 1 with one line naming --app-dir."""
    code, out, err = invoke("serve", "--app-dir", str(tmp_path / "nope"), "--port", "0")
    assert code == 1 and err.strip() == f"error: --app-dir {tmp_path / 'nope'}: not a directory"
    assert "Traceback" not in out + err
