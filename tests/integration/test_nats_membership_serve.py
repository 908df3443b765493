"""`chronik serve` with `cluster.backend: nats`: two nodes on separate SQLite stores find each
other through the NATS KV bucket of their transport; GET /v1/cluster, the admin Cluster page
and `chronik cluster status --config` show both; a stopped node is listed as left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chronik.testing.services import free_port
from tests.integration.test_cluster import cluster_view, until

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CHRONIK_STORE": ""}


def _config(tmp_path: Path, name: str, nats_url: str, http_port: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"store: sqlite:///{tmp_path / name}.db\n"
        f"transport: {nats_url}\n"
        f"grpc: {{host: 127.0.0.1, port: {free_port()}}}\n"
        f"http: {{host: 127.0.0.1, port: {http_port}}}\n"
        f"cluster: {{enabled: true, node_id: {name}, ttl: 2, backend: nats, "
        "nats_bucket: serve_members}\n"
    )
    return path


@pytest.fixture
def nodes(tmp_path: Path, nats_url: str) -> Iterator[list[tuple[subprocess.Popen[str], int]]]:
    """Two `chronik serve` nodes, each on its own SQLite store, members in NATS KV."""
    started = []
    for name in ("node-n1", "node-n2"):
        port = free_port()
        config = str(_config(tmp_path, name, nats_url, port))
        proc = subprocess.Popen(
            [sys.executable, "-m", "chronik.cli", "serve", "--config", config],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append((proc, port))
    yield started
    for proc, _ in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_two_serve_nodes_meet_in_the_nats_bucket(
    tmp_path: Path, nodes: list[tuple[subprocess.Popen[str], int]]
) -> None:
    """Both nodes show alive over HTTP, in the admin UI and in the CLI (read as the config
    says); after SIGTERM the stopped node is listed as left."""
    ports = [port for _, port in nodes]
    view = until(lambda: (v := cluster_view(ports[0]))["live"] == 2 and v, 90, "2 live members")
    assert [m["node_id"] for m in view["members"]] == ["node-n1", "node-n2"]
    assert cluster_view(ports[1])["digest"] == view["digest"]
    page = httpx.get(f"http://127.0.0.1:{ports[1]}/admin/cluster", timeout=5)
    assert page.status_code == 200
    for node_id in ("node-n1", "node-n2"):
        assert f'data-node="{node_id}" data-state="alive"' in page.text
    nodes[1][0].terminate()
    nodes[1][0].communicate(timeout=30)
    config = str(tmp_path / "node-n1.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "chronik.cli", "cluster", "status", "--json", "--config", config],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    states = {m["node_id"]: m["state"] for m in json.loads(done.stdout)["members"]}
    assert states == {"node-n1": "alive", "node-n2": "left"}
