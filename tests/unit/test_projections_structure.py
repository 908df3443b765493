"""The projection processor has one committer: the decision modules take values, write nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "chronik" / "projections"
#: Modules that decide from values and return writes: they never commit nor see the processor.
PURE = ("batch", "bookkeeping", "control", "dead_letters", "lanes", "plan")


def _tree(name: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{name}.py").read_text())


@pytest.mark.parametrize("name", PURE)
def test_a_decision_module_never_imports_the_processor(name: str) -> None:
    """Not even under TYPE_CHECKING: control, plan, lanes ... know nothing of the processor."""
    imported = [
        node.module
        for node in ast.walk(_tree(name))
        if isinstance(node, ast.ImportFrom) and node.module is not None
    ]
    assert "chronik.projections.processor" not in imported
    names = {
        a.name for n in ast.walk(_tree(name)) if isinstance(n, ast.ImportFrom) for a in n.names
    }
    assert "ProjectionProcessor" not in names


@pytest.mark.parametrize("name", PURE)
def test_a_decision_module_never_commits(name: str) -> None:
    """No unit of work is opened outside processor.py (and the operator-facing admin)."""
    calls = [
        node.func.attr
        for node in ast.walk(_tree(name))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]
    assert "transaction" not in calls and "_commit" not in calls


def test_dead_letter_rows_are_built_in_one_module() -> None:
    """Only dead_letters.py names the dead-letter table: rows, retries and drops live there."""
    users = sorted(
        path.stem
        for path in PACKAGE.glob("*.py")
        if "DEAD_LETTERS" in path.read_text() and path.stem not in ("bookkeeping", "admin")
    )
    assert users == ["dead_letters"]
