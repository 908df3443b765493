"""`chronik serve` as a process: it starts, serves the shop or a project's own app, and stops
cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

import chronik
from chronik.sdk import Client
from chronik.testing.services import free_port

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


PROJECT_MODULE = """
import chronik


def build_app(store):
    return chronik.Chronik(store=store)
"""


def serve_console_script(cwd: Path, *args: str) -> tuple[int, str, str]:
    """Run the installed `chronik serve` (the console script, not python -m) in ``cwd``; stop
    it with SIGTERM once it listens; its exit code, stdout and stderr."""
    script = Path(sys.executable).with_name("chronik")
    assert script.is_file(), f"{script}: the chronik console script is not installed"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHRONIK_STORE")}
    proc = subprocess.Popen(
        [str(script), "serve", "--port", "0", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        out = ""
        while "gRPC:" not in out:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        if "gRPC:" in out:
            proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=30)
        return proc.returncode, out + rest, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serving(args: list[str], cwd: Path, pythonpath: Path, until: str) -> Iterator[str]:
    """`python -m chronik.cli serve ARGS` in ``cwd``: the start-up output up to the line with
    ``until``; on leaving, SIGTERM and a clean exit (killed if still running)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "CHRONIK_STORE": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "chronik.cli", "serve", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = ""
        while until not in out:
            line = proc.stdout.readline()
            assert line, (out, proc.stderr.read())
            out += line
        yield out
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_console_script_imports_the_project_from_the_working_directory(tmp_path: Path) -> None:
    """`chronik serve --config chronik.yaml` (the installed script) in a project folder finds
    the project's own module, as `python -m chronik.cli` does; --app-dir names another folder."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "bank_project_app.py").write_text(PROJECT_MODULE)
    (project / "chronik.yaml").write_text(
        "store: sqlite:///data/bank.db\nhttp: {enabled: false}\napp: bank_project_app:build_app\n"
    )
    code, out, err = serve_console_script(project, "--config", "chronik.yaml")
    assert code == 0 and "stopped" in out, err
    assert (project / "data" / "bank.db").exists()
    code, out, err = serve_console_script(
        tmp_path, "--config", "project/chronik.yaml", "--app-dir", "project"
    )
    assert code == 0 and "stopped" in out, err
    code, out, err = serve_console_script(tmp_path, "--config", "project/chronik.yaml")
    assert code == 1 and "No module named 'bank_project_app'" in err, (out, err)


async def test_serve_serves_the_built_docs_site_and_the_admin_links_to_it(tmp_path: Path) -> None:
    """With a built docs site in http.docs_dir, chronik serve serves it at /docs/, says so at
    start-up, and the admin pages link to their docs pages there."""
    project = tmp_path / "project"
    (project / "site" / "how-to" / "rebuilds-resets").mkdir(parents=True)
    (project / "site" / "index.html").write_text("<h1>chronik docs</h1>")
    (project / "site" / "how-to" / "rebuilds-resets" / "index.html").write_text("rebuilds")
    (project / "bank_docs_app.py").write_text(PROJECT_MODULE)
    port = free_port()
    (project / "chronik.yaml").write_text(
        f"store: sqlite:///data/bank.db\napp: bank_docs_app:build_app\n"
        f"http: {{port: {port}, docs_dir: site}}\n"
    )
    args = ["--config", "chronik.yaml", "--port", "0"]
    with serving(args, project, project, "docs:") as out:
        assert f"http://127.0.0.1:{port}/docs/" in out
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert "chronik docs" in (await http.get("/docs/")).text
            assert (await http.get("/docs/how-to/rebuilds-resets/")).text == "rebuilds"
            page = (await http.get("/admin/projections")).text
            assert 'href="/docs/how-to/rebuilds-resets/"' in page


async def test_the_tutorial_config_serves_its_curls(tmp_path: Path) -> None:
    """docs/snippets/library.yaml served as the tutorial says: the lend command, the live query
    over the app's own projection, the book's events and the schemas all answer."""
    http_port = free_port()
    snippets = ROOT / "docs" / "snippets"
    args = ["--config", str(snippets / "library.yaml"), "--app-dir", str(snippets)]
    args += ["--port", "0", "--http-port", str(http_port)]
    with serving(args, tmp_path, ROOT / "src", "HTTP:") as banner:
        assert "loans" in banner and "overdue" in banner, banner
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
            lend = {
                "domain": "book",
                "aggregate_id": "emma",
                "type": "Lend",
                "command_id": "lend-emma-1",
                "payload": {"loan_id": "loan-2", "member": "ada"},
            }
            r = await http.post("/v1/commands?wait=projections", json=lend)
            assert r.status_code == 200, r.text
            r = await http.get("/v1/queries/loans", params={"member": "ada"})
            assert r.status_code == 200, r.text
            assert [(row["book"], row["member"]) for row in r.json()["rows"]] == [("emma", "ada")]
            r = await http.get("/v1/streams/book/emma/events")
            assert [e["type"] for e in r.json()["events"]] == ["BookLent"]
            r = await http.get("/v1/schemas")
            assert "Lend" in {c["type"] for d in r.json()["domains"] for c in d["commands"]}
