"""The docs site builds strictly, shows its snippets verbatim, and its configs are valid."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chronik.server.auth import Auth
from chronik.server.config import build_app, load_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"
CONFIGS = sorted(SNIPPETS.glob("*.yaml"))
INCLUDE = re.compile(r'^--8<-- "([^":]+)(?::(\w+))?"$', re.M)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as `make docs` builds it (strict), into a temp dir."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_site_builds_strictly(site: Path) -> None:
    """`mkdocs build --strict` succeeds: no broken link, reference or include."""
    assert (site / "index.html").is_file()
    assert (site / "tutorial" / "embedded" / "index.html").is_file()


def test_reference_pages_render_docstrings(site: Path) -> None:
    """Each API reference page renders the docstrings of its module's public names."""
    expected = {
        "chronik": "chronik.Chronik",
        "projections": "chronik.projections.Projection",
        "sagas": "chronik.sagas.Saga",
        "deadlines": "chronik.deadlines.DeadlineScheduler",
        "outbox": "chronik.outbox.OutboxDispatcher",
        "testing": "chronik.testing.saga_fixture",
        "sdk": "chronik.sdk.serve_business_logic",
        "errors": "chronik.errors.WrongExpectedVersion",
    }
    for page, anchor in expected.items():
        html = (site / "reference" / page / "index.html").read_text()
        assert f'id="{anchor}"' in html, page


def _includes() -> Iterator[tuple[Path, str, str | None]]:
    for page in sorted(DOCS.rglob("*.md")):
        for name, section in INCLUDE.findall(page.read_text()):
            yield page, name, section or None


def test_pages_include_only_tested_files() -> None:
    """Every code include names a file under docs/snippets (run by test_docs) or a config."""
    found = list(_includes())
    assert found, "no page includes a snippet"
    for page, name, section in found:
        path = SNIPPETS / name
        assert path.is_file(), f"{page.relative_to(ROOT)} includes missing {name}"
        assert path.suffix in (".py", ".yaml"), name
        if section:
            text = path.read_text()
            assert f"[start:{section}]" in text and f"[end:{section}]" in text, (name, section)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_snippets_are_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each config shown in the docs loads, its app factory imports, its keys are well formed."""
    monkeypatch.syspath_prepend(str(SNIPPETS))
    for name in ("DESK_KEY", "OPS_KEY"):
        monkeypatch.setenv(name, "a-long-enough-key")
    config = load_config(path)
    app = build_app(config, "memory://")  # the store in the file may be a remote server
    assert "book" in app.bus.domains
    Auth.from_config(config.auth.api_keys)
    if config.queries:
        assert {q.projection for q in config.queries} <= {"loans"}
