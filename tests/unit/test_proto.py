"""The generated stubs in src/chronik/v1 match proto/chronik/v1/chronik.proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ["chronik_pb2.py", "chronik_pb2.pyi", "chronik_pb2_grpc.py"]


def test_stubs_are_generated_from_the_current_proto(tmp_path: Path) -> None:
    """Regenerating the stubs gives the committed files byte for byte (run `make proto`)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(ROOT / "proto" / "chronik" / "v1" / "chronik.proto"),
        ],
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "chronik" / "v1" / name).read_text()
        assert fresh == (ROOT / "src" / "chronik" / "v1" / name).read_text(), name
