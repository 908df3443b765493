"""Every snippet in the README and docs is a file, and it runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNIPPETS = sorted((ROOT / "docs" / "snippets").glob("*.py"))
MARKER = re.compile(r"<!-- snippet: (\S+) -->\n```python\n(.*?)```", re.S)


def test_readme_snippets_match_their_files() -> None:
    """Each snippet embedded in README.md is identical to the file it names."""
    found = MARKER.findall((ROOT / "README.md").read_text())
    assert found, "README.md embeds no snippet"
    for name, body in found:
        assert (ROOT / name).read_text() == body, name


@pytest.mark.parametrize("path", SNIPPETS, ids=[p.name for p in SNIPPETS])
def test_snippet_runs(path: Path, tmp_path: Path) -> None:
    """The snippet runs to completion in a fresh directory and prints something."""
    out = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
