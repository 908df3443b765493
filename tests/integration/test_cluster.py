"""Cluster membership across real `chronik serve` processes on one PostgreSQL: three nodes
register; one killed with SIGKILL drops out of `chronik cluster status` after its ttl and
the others' view changes epoch; GET /v1/cluster and the admin Cluster page show the members;
a clean stop shows a node as left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chronik.testing.services import free_port

ROOT = Path(__file__).resolve().parents[2]
TTL = 2.0


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}", "CHRONIK_STORE": ""}


def _serve(
    tmp_path: Path, store: str, name: str, http_port: int, **cluster: str
) -> subprocess.Popen[str]:
    fields = {"enabled": "true", "node_id": name, "ttl": str(TTL), **cluster}
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"store: {store}\n"
        f"grpc: {{host: 127.0.0.1, port: {free_port()}}}\n"
        f"http: {{host: 127.0.0.1, port: {http_port}}}\n"
        f"cluster: {{{', '.join(f'{k}: {v}' for k, v in fields.items())}}}\n"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "chronik.cli", "serve", "--config", str(path)],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _status(tmp_path: Path, store: str) -> dict[str, Any]:
    """What `chronik cluster status --json` prints, parsed."""
    done = subprocess.run(
        [sys.executable, "-m", "chronik.cli", "cluster", "status", "--store", store, "--json"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    view: dict[str, Any] = json.loads(done.stdout)
    return view


def _states(view: dict[str, Any]) -> dict[str, str]:
    return {m["node_id"]: m["state"] for m in view["members"]}


def until(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = check()
        except (httpx.HTTPError, AssertionError, KeyError):
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def nodes(tmp_path: Path, postgres_url: str) -> Iterator[list[tuple[subprocess.Popen[str], int]]]:
    """Three `chronik serve` nodes with cluster membership on one PostgreSQL database."""
    started = []
    for i in range(3):
        port = free_port()
        started.append((_serve(tmp_path, postgres_url, f"node-{i + 1}", port), port))
    yield started
    for proc, _ in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def cluster_view(port: int) -> dict[str, Any]:
    r = httpx.get(f"http://127.0.0.1:{port}/v1/cluster", timeout=5)
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()
    return view


def test_three_nodes_register_and_a_killed_one_drops_out_after_its_ttl(
    tmp_path: Path, postgres_url: str, nodes: list[tuple[subprocess.Popen[str], int]]
) -> None:
    """Three nodes show alive in the CLI, over HTTP and in the admin UI with their addresses;
    after SIGKILL one turns dead within ttl (+ a heartbeat), the digest and the survivors'
    epoch change, and a SIGTERM'd node is listed as left."""
    ids = {"node-1", "node-2", "node-3"}
    ports = [port for _, port in nodes]
    first = until(lambda: (v := cluster_view(ports[0]))["live"] == 3 and v, 90, "3 live members")
    assert first["node_id"] == "node-1" and {m["node_id"] for m in first["members"]} == ids
    by_id = {m["node_id"]: m for m in first["members"]}
    for i, port in enumerate(ports):
        member = by_id[f"node-{i + 1}"]
        assert member["http"] == f"127.0.0.1:{port}" and member["grpc"].startswith("127.0.0.1:")
        assert member["version"] and member["ttl"] == TTL and "loop_lag_s" in member["load"]
        assert "deadline scheduler" in member["parts"]  # each node runs the task

    def one_holder() -> list[str] | None:  # the aggregates' deadline lease: one node holds it
        view = cluster_view(ports[0])["members"]
        found = [m["node_id"] for m in view if "deadlines:chronik_deadlines" in m["parts"]]
        return found if len(found) == 1 else None

    until(one_holder, 30, "one node listing the deadline lease it holds")
    status = _status(tmp_path, postgres_url)
    assert _states(status) == dict.fromkeys(ids, "alive") and status["digest"] == first["digest"]
    page = httpx.get(f"http://127.0.0.1:{ports[1]}/admin/cluster", timeout=5)
    assert page.status_code == 200
    for node_id in ids:
        assert f'data-node="{node_id}" data-state="alive"' in page.text

    killed_at = time.monotonic()
    nodes[2][0].send_signal(signal.SIGKILL)
    gone = until(
        lambda: (v := _status(tmp_path, postgres_url)) and _states(v)["node-3"] == "dead" and v,
        30,
        "node-3 dead",
    )
    assert time.monotonic() - killed_at >= TTL / 3  # not before its lease could expire
    assert _states(gone) == {"node-1": "alive", "node-2": "alive", "node-3": "dead"}
    assert gone["digest"] != first["digest"]
    after = until(lambda: (v := cluster_view(ports[0]))["live"] == 2 and v, 30, "node-1's view")
    assert after["epoch"] > first["epoch"] and after["digest"] == gone["digest"]
    assert until(lambda: cluster_view(ports[1])["digest"] == gone["digest"], 30, "node-2's view")

    nodes[1][0].send_signal(signal.SIGTERM)
    nodes[1][0].communicate(timeout=60)
    left = _status(tmp_path, postgres_url)
    assert _states(left) == {"node-1": "alive", "node-2": "left", "node-3": "dead"}


def test_a_bad_cluster_config_stops_serve_with_one_line_naming_the_field(tmp_path: Path) -> None:
    """`cluster: {ttl: 0}` fails `chronik serve` at once: exit 1, one error line naming
    cluster.ttl, no traceback."""
    proc = _serve(tmp_path, f"sqlite:///{tmp_path}/e.db", "node-x", free_port(), ttl="0")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error:") and "cluster.ttl" in err
