"""deploy/docker/Dockerfile, parsed (no Docker engine runs here): two stages, a non-root
numeric user, a health check on /healthz, SIGTERM, `chronik serve --config ...` as the
command, extras that exist in pyproject.toml, and a .dockerignore that keeps what it copies."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

from chronik.server.config import HttpConfig

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    joined = re.sub(
        r"\\\n\s*",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions, by stage name (ARGs before the first FROM under "")."""
    out: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for word, rest in instructions(DOCKERFILE.read_text()):
        if word == "FROM":
            image, _, name = rest.partition(" AS ")
            current = name.strip()
            out[current] = [(word, image.strip())]
        else:
            out[current].append((word, rest))
    return out


def exec_form(rest: str) -> list[str]:
    """The JSON array of an exec-form instruction (a shell form is refused)."""
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def test_a_build_stage_and_a_slim_runtime_stage() -> None:
    """Two stages; the runtime copies only the wheels from the build stage."""
    found = stages()
    assert list(found) == ["", "build", "runtime"]
    assert found[""] == [("ARG", "PYTHON_IMAGE=python:3.11-slim")]
    assert found["build"][0] == found["runtime"][0] == ("FROM", "${PYTHON_IMAGE}")
    copies = [rest for word, rest in found["runtime"] if word == "COPY"]
    assert copies == ["--from=build /wheels /wheels"]


def test_the_runtime_runs_as_a_numeric_non_root_user() -> None:
    """USER is numeric (Kubernetes runAsNonRoot can check it) and not 0."""
    users = [rest for word, rest in stages()["runtime"] if word == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    runtime = " ".join(rest for word, rest in stages()["runtime"] if word == "RUN")
    assert f"--uid {uid}" in runtime and f"--gid {gid}" in runtime


def test_healthcheck_stop_signal_and_the_serve_command() -> None:
    """HEALTHCHECK fetches /healthz on chronik's HTTP port, STOPSIGNAL is SIGTERM, and
    ENTRYPOINT + CMD run `chronik serve --config /etc/chronik/chronik.yaml`."""
    runtime = dict(stages()["runtime"])
    check = runtime["HEALTHCHECK"]
    assert "--interval=" in check and check.split("CMD ", 1)[1].startswith("[")
    probe = " ".join(exec_form(check.split("CMD ", 1)[1]))
    assert f"http://127.0.0.1:{HttpConfig().port}/healthz" in probe
    assert runtime["STOPSIGNAL"] == "SIGTERM"
    command = exec_form(runtime["ENTRYPOINT"]) + exec_form(runtime["CMD"])
    assert command == ["chronik", "serve", "--config", "/etc/chronik/chronik.yaml"]
    assert set(runtime["EXPOSE"].split()) == {"50051", str(HttpConfig().port)}


def test_the_installed_extras_exist_in_pyproject() -> None:
    """Both stages name the same extras, each one defined in pyproject.toml, and they
    include what `chronik serve` needs (cli, grpc, http) and the PostgreSQL driver."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    args = [rest for word, rest in instructions(DOCKERFILE.read_text()) if word == "ARG"]
    named = {a.partition("=")[2] for a in args if a.startswith("CHRONIK_EXTRAS=")}
    assert len(named) == 1
    wanted = named.pop().split(",")
    assert set(wanted) <= set(extras)
    assert {"cli", "grpc", "http", "postgres"} <= set(wanted)


def test_dockerignore_keeps_what_the_build_copies() -> None:
    """Every path the build stage COPYs is let through .dockerignore; tests and .venv are not."""
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]

    def sent(path: str) -> bool:
        keep = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if pattern == "**" or fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                keep = negate
        return keep

    copies = [rest.split()[:-1] for word, rest in stages()["build"] if word == "COPY"]
    for path in [p for sources in copies for p in sources]:
        assert (ROOT / path).exists() and sent(path), path
    assert sent("src/chronik/app.py")
    assert not sent("tests/unit/test_deploy.py") and not sent(".venv/bin/python")
