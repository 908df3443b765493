"""Every config the README and docs show is a file, shown verbatim, that loads and builds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chronik.server.auth import Auth
from chronik.server.config import build_app, build_projections, load_config

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
YAML_BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.S | re.M)
INCLUDE = re.compile(r'--8<-- "[^"]+"\n')  # the docs site includes a tested file (or section)
NAMED = re.compile(r"# (\S+?):?(?:\s|$)")


def shown_configs() -> list[tuple[str, str]]:
    """(page, block) for every YAML block of the README and the docs."""
    return [
        (str(page.relative_to(ROOT)), body)
        for page in PAGES
        for body in YAML_BLOCK.findall(page.read_text())
        if not INCLUDE.fullmatch(body)  # docs/snippets/*.yaml: tests/unit/test_docs_site.py
    ]


def config_files() -> list[Path]:
    """The files the blocks name, and every chronik*.yaml under examples/."""
    named = {ROOT / m.group(1) for _, body in shown_configs() if (m := NAMED.match(body))}
    return sorted(named | set((ROOT / "examples").glob("**/chronik*.yaml")))


def test_readme_shows_configs() -> None:
    """The README shows the config `make run` serves (so the checks below check something)."""
    assert ("README.md", (ROOT / "examples/shop/chronik.yaml").read_text()) in shown_configs()


@pytest.mark.parametrize(("page", "body"), shown_configs(), ids=lambda v: v.split("\n")[0])
def test_each_block_is_the_file_it_names(page: str, body: str) -> None:
    """A YAML block's first line is `# PATH` and the block is that file, byte for byte."""
    named = NAMED.match(body)
    assert named, f"{page}: a YAML block must start with `# path/of/the/file.yaml`"
    path = ROOT / named.group(1)
    assert path.is_file(), f"{page} shows {named.group(1)}, which does not exist"
    assert body == path.read_text(), f"{page} differs from {named.group(1)}"


@pytest.mark.parametrize("path", config_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_config_loads_and_builds(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file loads, and its app, projections and API keys build (on an in-memory store)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WEB_KEY", "a-key-for-the-test")
    config = load_config(path)
    app = build_app(config, "memory://")
    assert app.bus.domains
    names = [p.name for p in build_projections(config, app)]
    assert names and len(names) == len(set(names))
    Auth.from_config(config.auth.api_keys)
