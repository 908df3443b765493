"""``chronik serve`` without HTTP imports neither the HTTP stack nor the other commands (the
server's idle memory, bench W10-idle-memory)."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json, sys
sys.argv = ["chronik", "serve", "--help"]
from chronik.cli import _build_serve
_build_serve()
import chronik.server.auth, chronik.server.config, chronik.server.grpc, chronik.server.limits
heavy = ("starlette", "prometheus_client", "rich.console", "chronik.cli.archive",
         "chronik.cli.gdpr", "chronik.server.http_state", "chronik.server.metrics")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


def test_the_grpc_server_path_leaves_the_http_stack_and_other_commands_out() -> None:
    """What serve imports for a gRPC-only server: no starlette, metrics, rich or CLI groups."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_serve_help_is_the_same_through_the_short_path() -> None:
    """``chronik serve --help`` (built without the other groups) lists serve's options."""
    out = subprocess.run(
        [sys.executable, "-m", "chronik.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout and "--store" in out.stdout
