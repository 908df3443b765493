"""The Dockerfile's build steps, run without Docker: its `pip wheel` and `pip install` RUN
lines, taken from deploy/docker/Dockerfile and run as written (only the image's absolute paths
mapped into a temp dir) on a copy of what its COPY lines copy; then `chronik serve` from the
resulting venv answers /healthz, the image's HEALTHCHECK command passes, and SIGTERM stops it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chronik.testing.service_base import free_port, unavailable

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments): comments dropped, continuation lines joined."""
    lines = [x for x in DOCKERFILE.read_text().splitlines() if not x.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        (line.split(" ", 1)[0].upper(), line.split(" ", 1)[1].strip())
        for line in joined.splitlines()
        if line.strip()
    ]


def run_step(command: str, paths: dict[str, Path], cwd: Path, env: dict[str, str]) -> None:
    """One RUN line as /bin/sh runs it in the image, with the image's paths mapped."""
    for image_path, local in paths.items():
        command = command.replace(image_path, str(local))
    command = re.sub(r"(^|&& )python ", rf"\g<1>{sys.executable} ", command)
    done = subprocess.run(
        ["sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500
    )
    if done.returncode != 0:
        if "NewConnectionError" in done.stderr or "No matching distribution" in done.stderr:
            unavailable(f"PyPI is not reachable for the Dockerfile's pip steps: {done.stderr}")
        raise AssertionError(f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


@pytest.mark.timeout(1800)
def test_the_dockerfile_build_steps_give_a_server_that_answers_healthz(tmp_path: Path) -> None:
    """pip wheel (build stage) + venv and pip install from the wheels alone (runtime stage),
    then `chronik serve --config` from that venv: /healthz and /readyz answer 200, the
    HEALTHCHECK command exits 0, SIGTERM exits 0."""
    steps = instructions()
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    runs = [
        rest for word, rest in steps if word == "RUN" and re.search(r"pip (wheel|install) ", rest)
    ]
    assert len(runs) == 2, runs  # pip wheel in the build stage, pip install in the runtime
    context = tmp_path / "src"
    context.mkdir()
    build_copies = [rest.split() for word, rest in steps if word == "COPY" and "--from" not in rest]
    for *sources, _dest in build_copies:
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                shutil.copytree(src, context / source, ignore=ignore)
            else:
                shutil.copy(src, context / source)
    paths = {"/wheels": tmp_path / "wheels", "/opt/chronik": tmp_path / "opt"}
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "CHRONIK_EXTRAS": args["CHRONIK_EXTRAS"],
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    run_step(runs[0], paths, context, env)
    assert any(p.name.startswith("chronik-") for p in (tmp_path / "wheels").glob("*.whl"))
    run_step(runs[1], paths, tmp_path, env)
    assert not (tmp_path / "wheels").exists()  # the runtime step removes them
    venv = tmp_path / "opt" / "bin"
    where = subprocess.run(
        [
            venv / "python",
            "-c",
            "import chronik, grpc, starlette, asyncpg; print(chronik.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(tmp_path / "opt")), where.stdout  # not the checkout

    http_port, grpc_port = free_port(), free_port()
    config = tmp_path / "chronik.yaml"
    config.write_text(
        f"store: sqlite:///{tmp_path}/events.db\n"
        f"grpc: {{host: 127.0.0.1, port: {grpc_port}}}\n"
        f"http: {{host: 127.0.0.1, port: {http_port}}}\n"
    )
    entry = dict(steps)
    command = json.loads(entry["ENTRYPOINT"]) + json.loads(entry["CMD"])
    command = [str(venv / command[0]), *command[1:]]
    command[command.index("/etc/chronik/chronik.yaml")] = str(config)
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                health = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no /healthz within 60 s"
            time.sleep(0.2)
        ready = httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        check = entry["HEALTHCHECK"].split("CMD ", 1)[1]
        probe = [a.replace(":8080/", f":{http_port}/") for a in json.loads(check)]
        assert probe[0] == "python"
        subprocess.run([venv / "python", *probe[1:]], env=env, check=True, timeout=10)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
