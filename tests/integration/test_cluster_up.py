"""`chronik cluster up`: PostgreSQL, NATS and two `chronik serve` nodes of the example shop on
loopback; each node takes a command, `chronik cluster status` lists both, and SIGINT stops every
process it started (nodes, NATS, PostgreSQL's postmaster): no orphans."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from chronik.errors import ValidationError
from chronik.testing.local_cluster import SERVER, WORKER, LocalCluster, node_config
from chronik.testing.service_base import unavailable

ROOT = Path(__file__).resolve().parents[2]
NODE = re.compile(r"^(\S+)\s+gRPC (\S+)\s+HTTP (\S+)/v1\s+admin \S+\s+pid (\d+)$")


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The process's stdout lines, read by a thread (None at the end)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _until_ready(lines: queue.Queue[str | None], proc: subprocess.Popen[str]) -> list[str]:
    """Every line up to ``ready: ...``; a start that cannot find its services skips or fails."""
    seen: list[str] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line is None:
            proc.wait(10)
            assert proc.stderr is not None
            err = proc.stderr.read()
            if "postgresql" in err.lower() or "nats" in err.lower():
                unavailable(f"chronik cluster up could not start its services: {err}")
            raise AssertionError(f"cluster up exited {proc.returncode}: {seen} {err}")
        seen.append(line)
        if line.startswith("ready:"):
            return seen
    raise AssertionError(f"cluster up not ready within 240 s: {seen}")


def _gone(pid: int) -> bool:
    """True when no process ``pid`` runs (a zombie left for init to reap counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def test_cluster_up_serves_two_nodes_and_sigint_leaves_no_process(tmp_path: Path) -> None:
    """Two servers start on one PostgreSQL + NATS, each answers a command, both are listed
    by `chronik cluster status`, and SIGINT ends every process cluster up started."""
    env = {**os.environ, "CHRONIK_STORE": ""}
    args = ["cluster", "up", "--servers", "2", "--dir", str(tmp_path / "cluster"), "--grace", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "chronik.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = _lines(proc)
    try:
        shown = _until_ready(lines, proc)
        store = next(line.split()[1] for line in shown if line.startswith("store:"))
        service_pids = [int(p) for p in re.findall(r"pid (\d+)\)", "\n".join(shown))]
        nodes = {m[1]: (m[3], int(m[4])) for line in shown if (m := NODE.match(line))}
        assert sorted(nodes) == ["server-1", "server-2"], shown
        assert len(service_pids) == 2, shown  # PostgreSQL's postmaster and nats-server
        assert any(line.startswith("transport: nats://127.0.0.1:") for line in shown)
        for name, (http, _) in nodes.items():
            body = {
                "domain": "customer",
                "aggregate_id": f"via-{name}",
                "type": "CreateCustomer",
                "payload": {"name": name, "email": f"{name}@example.com"},
                "command_id": str(uuid.uuid4()),
            }
            answer = httpx.post(f"{http}/v1/commands", json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json()["events"][0]["type"] == "CustomerCreated"
        status = subprocess.run(
            [sys.executable, "-m", "chronik.cli", "cluster", "status", "--store", store],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        listed = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
        for name, (http, _) in nodes.items():
            assert "alive" in listed[name] and http.removeprefix("http://") in listed[name]
        assert "2 live of 2" in status.stdout
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        rest = []
        while (line := lines.get(timeout=10)) is not None:
            rest.append(line)
        assert rest[0].startswith("stopping") and rest[-1] == "stopped", rest
        pids = [pid for _, pid in nodes.values()] + service_pids
        deadline = time.monotonic() + 10
        while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in pids if not _gone(pid)] == []
        logs = sorted(p.name for p in (tmp_path / "cluster").iterdir())
        assert logs == ["server-1.log", "server-1.yaml", "server-2.log", "server-2.yaml"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_a_node_config_keeps_projections_on_workers_only_and_applies_overrides() -> None:
    """With workers, servers drop the app's projections and queries; every node gets the
    cluster's store, transport, loopback ports and its own node id; overrides merge."""
    base = {
        "app": "examples.shop.app:build_app",
        "projections": "examples.shop.app:projections",
        "queries": [{"name": "q", "projection": "p", "table": "t"}],
        "http": {"admin_writes": True, "port": 1},
        "limits": {"max_inflight_commands": 8},
    }

    def made(role: str, with_workers: bool) -> dict[str, object]:
        return node_config(
            base,
            name=f"{role}-1",
            role=role,
            store="postgresql://u@127.0.0.1:1/db",
            transport="nats://127.0.0.1:2",
            grpc_port=3,
            http_port=4,
            with_workers=with_workers,
            membership_ttl=2.0,
            overrides={"cluster": {"forget_after": 60}, "outbox": {"batch_size": 5}},
        )

    server, worker, alone = made(SERVER, True), made(WORKER, True), made(SERVER, False)
    assert "projections" not in server and "queries" not in server
    assert worker["projections"] == alone["projections"] == base["projections"]
    assert server["http"] == {"admin_writes": True, "host": "127.0.0.1", "port": 4}
    assert server["grpc"] == {"host": "127.0.0.1", "port": 3}
    assert server["cluster"] == {
        "enabled": True,
        "node_id": "server-1",
        "ttl": 2.0,
        "advertise": {"grpc": "127.0.0.1:3", "http": "127.0.0.1:4"},
        "forget_after": 60,
    }
    assert worker["outbox"] == {"batch_size": 5} and worker["transport"] == "nats://127.0.0.1:2"
    assert base["http"] == {"admin_writes": True, "port": 1}  # the base is left as it was


@pytest.mark.parametrize(("servers", "workers", "field"), [(0, 0, "servers"), (1, -1, "workers")])
def test_a_cluster_without_servers_or_with_negative_workers_is_refused(
    servers: int, workers: int, field: str
) -> None:
    """LocalCluster refuses an impossible shape with a ValidationError naming the field."""
    with pytest.raises(ValidationError) as caught:
        LocalCluster(servers=servers, workers=workers)
    assert caught.value.field == field
