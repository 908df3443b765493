"""What the built package promises its users beyond code: PEP 561 type information."""

from __future__ import annotations

import tomllib
from pathlib import Path

import chronik

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_ships_its_py_typed_marker() -> None:
    """src/chronik/py.typed exists beside the code the wheel packs, as "Typing :: Typed" says."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "Typing :: Typed" in project["project"]["classifiers"]
    assert (Path(chronik.__file__).parent / "py.typed").is_file()
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["src/chronik"]
    assert not {"only-include", "exclude"} & set(wheel)  # nothing filters the marker out
