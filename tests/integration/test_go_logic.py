"""The shop's transaction domain as a Go service (examples/shop/go), held to the Node tests.

The binary is built once per source change with Debian's Go toolchain, offline
(examples/shop/go/build.sh), and cached under ~/.cache/chronik-go by a hash of the sources, the
build script, the .proto and the toolchain. Missing tools are installed with apt-get; without
them the tests skip (fail with CHRONIK_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import msgspec
import pytest
import yaml

import chronik
from chronik.aggregate import AggregateModel
from chronik.testing.service_base import ServiceNotStarted, apt_install, unavailable
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc
from examples.shop.transaction import Transaction
from tests.integration import test_remote_logic as remote
from tests.integration.test_remote_logic import (
    ROOT,
    Child,
    check_down_then_restarted,
    check_random_payloads,
    check_scenario,
    check_serve,
    check_wire_contract,
    command,
    customer_service,
    remote_app,
    running,
    serving,
)

GO_DIR = ROOT / "examples" / "shop" / "go"
PROTO = ROOT / "proto" / "chronik" / "v1" / "chronik.proto"
GO_PACKAGES = [
    "golang-go",
    "golang-google-grpc-dev",
    "golang-google-protobuf-dev",
    # grpc's codec must be the APIv2-backed github.com/golang/protobuf (1.5): grpc-dev's default
    # alternative, 1.3, panics on the messages protoc-gen-go 1.28 generates
    "golang-github-golang-protobuf-1-5-dev",
    "protoc-gen-go",
    "protoc-gen-go-grpc",
    "protobuf-compiler",
]
GO_TOOLS = ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")
GO_SOURCES = Path("/usr/share/gocode/src")
GO_LIBRARIES = (  # a file of each library's (right) version, in Debian's GOPATH
    "google.golang.org/grpc/version.go",
    "google.golang.org/protobuf/internal/version/version.go",
    "github.com/golang/protobuf/proto/registry.go",  # 1.4 and later
)
BUILD_TIMEOUT = 300

workdir = remote.workdir  # the module-scoped fixtures of the Node tests, for this module
customer_port = remote.customer_port


# --- the binary ---------------------------------------------------------------------------------


def _toolchain_present() -> bool:
    """True if the compilers, the plugins and the Go libraries are all installed."""
    return all(shutil.which(tool) for tool in GO_TOOLS) and all(
        (GO_SOURCES / lib).is_file() for lib in GO_LIBRARIES
    )


def _source_hash() -> str:
    """A hash of what the binary is built from: sources, build script, .proto, toolchain."""
    digest = hashlib.sha256()
    libraries = [GO_SOURCES / lib for lib in GO_LIBRARIES]
    for path in [*sorted(GO_DIR.glob("*.go")), GO_DIR / "build.sh", PROTO, *libraries]:
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    for tool in (["go", "version"], ["protoc", "--version"]):
        digest.update(subprocess.run(tool, capture_output=True, timeout=60).stdout)
    return digest.hexdigest()[:16]


def _cache_dir() -> Path:
    """~/.cache/chronik-go (or under XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chronik-go"


@pytest.fixture(scope="session")
def go_binary() -> Path:
    """The Go transaction service, built (or taken from the cache) once per session."""
    if not _toolchain_present():
        try:
            apt_install(GO_PACKAGES)
        except ServiceNotStarted as exc:
            unavailable(f"the Go toolchain is needed for the Go business-logic service: {exc}")
        if not _toolchain_present():
            unavailable(f"{' '.join(GO_PACKAGES)} installed, still missing a Go tool")
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    binary = cache / _source_hash() / "transaction-service"
    with (cache / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent sessions: one build at a time
        if not binary.exists():
            binary.parent.mkdir(exist_ok=True)
            partial = binary.with_suffix(".partial")
            env = {**os.environ, "GOCACHE": str(cache / "go-build")}
            built = subprocess.run(
                [str(GO_DIR / "build.sh"), str(partial)],
                env=env,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
            )
            if built.returncode != 0:
                pytest.fail(f"build.sh failed:\n{built.stdout}{built.stderr}", pytrace=False)
            partial.replace(binary)
    return binary


def go_service(binary: Path, workdir: Path, port: int = 0) -> Child:
    """The transaction domain as the Go gRPC service (not started)."""
    return Child(
        [str(binary), str(port)], r"transaction business logic on 127\.0\.0\.1:(\d+)", workdir
    )


@pytest.fixture(scope="module")
def go_port(go_binary: Path, workdir: Path) -> Iterator[int]:
    """The port of a Go transaction service shared by the module's tests."""
    with running(go_service(go_binary, workdir)) as child:
        yield child.port


# --- the Node service's tests, with the Go service ----------------------------------------------


async def test_go_and_in_process_shop_behave_identically(customer_port: int, go_port: int) -> None:
    """The shop scenario through the Go service gives the in-process shop's events (byte for byte),
    rejections and errors (tests/integration/test_remote_logic.py runs it in-process)."""
    async with serving(remote_app(customer_port, go_port)) as client:
        await check_scenario(client)


async def test_go_validation_matches_python_on_random_payloads(go_port: int) -> None:
    """On 400 random (mostly invalid) payloads the Go service and the Python schema agree:
    the same events byte for byte, or the same InvalidCommand message."""
    await check_random_payloads(go_port)


async def test_go_service_down_then_restarted(
    go_binary: Path, workdir: Path, customer_port: int
) -> None:
    """With the Go service killed a command fails UNAVAILABLE and stores nothing; restarted on
    the same port, the next command works; SIGTERM stops the service with exit code 0."""
    await check_down_then_restarted(
        lambda port: go_service(go_binary, workdir, port), customer_port
    )


async def test_go_service_answers_the_wire_contract(go_port: int) -> None:
    """Called directly, the Go service folds a snapshot and events, answers NOT_FOUND for an
    unknown command type and INVALID_ARGUMENT for a bad payload, with chronik's error name."""
    await check_wire_contract(go_port, "transaction.go")


async def test_chronik_serve_with_the_go_service(
    go_binary: Path, workdir: Path, tmp_path: Path
) -> None:
    """`chronik serve` with examples/shop/chronik-remote.yaml (its addresses moved to free ports)
    serves a transaction command through the Go service and exits 0 on SIGTERM."""
    settings = yaml.safe_load((ROOT / "examples" / "shop" / "chronik-remote.yaml").read_text())
    with (
        running(customer_service(workdir)) as customers,
        running(go_service(go_binary, workdir)) as transactions,
    ):
        ports = {"customer": customers.port, "transaction": transactions.port}
        for domain in settings["business_logic"]:
            domain["address"] = f"127.0.0.1:{ports[domain['domain']]}"
        config = tmp_path / "chronik-go.yaml"
        config.write_text(yaml.safe_dump(settings))
        await check_serve(config, workdir, tmp_path)


# --- what only the Go service needs to show -----------------------------------------------------

TRICKY: list[bytes] = [  # JSON corners where Go's encoding/json (or a hasty parser) would differ
    '{"customer_id": "<&>\\u2028\\u2029\\u007f\\b\\f\\u0001\\u001f\\ud83d\\ude00é\\/", "items": []}'
    .encode(),
    b'{"customer_id": "c", "customer_id": "d", "items": [{"qty": 0, "sku": "a", "qty": 1,'
    b' "price_cents": 123456789012345678901234567890}]}',
    b'{"customer_id": "c", "items": [{"sku": "a", "price_cents": 1, "qty": 1, "qty": 0}]}',
    b'{"customer_id": "c", "items": [{"sku": 1, "price_cents": "x"}]}',
    b'{"customer_id": "c", "items": [[], {}]}',
    b'{"customer_id": "c", "items": [{"sku": "a", "price_cents": -1e0, "qty": 1}]}',
    b'{"customer_id": "c", "items": [{"sku": "a", "price_cents": 1e-400, "qty": 1}]}',
    b'{"customer_id": "c", "items": [{"sku": "a", "price_cents": -0, "qty": 1}]}',
    b'{"customer_id": "c", "items": [{"sku": "a", "price_cents": -18446744073709551616}]}',
    b'{"customer_id": "c", "items": [{"sku": "a", "price_cents": 1, "qty": fals}]}',
    b'{"customer_id": "c", "items": [1e400]}',
    b'{"a": [1, [2, {"b": 1e999}]]}',
    b"1e999",
    b'{"customer_id": "\\ud800", "items": []}',
    b'{"customer_id": "\\ud800\\n", "items": []}',
    b'{"customer_id": "\\ud800\\u0041", "items": []}',
    b'{"customer_id": "\\ud800\\uzz12", "items": []}',
    b'{"customer_id": "\\udc00", "items": []}',
    b'{"customer_id": "\\uD83D\\uDE00", "items": []}',
    b'{"a": "\\ud800"}',
    b'{"a": "\\ud800\\u12',
    b'{"customer_id": "\xff", "items": []}',
    b'{"a": "\xff", "b": 1e999}',
    b'{"a": "\xff\x01"}',
    b'{"a": "\xff\\x"}',
    b'{"a": "\xed\xa0\x80", "\xc0\x80": 1}',
    b'{"a": "\xe2\x82"}',
    b'{"customer_id": "a\\x", "items": []}',
    b'{"customer_id": "a\tb", "items": []}',
    b'{"customer_id": "c", "items": [tru]}',
    b'{"customer_id": "c", "items": [nul',
    b'{"customer_id": "c", "items": [01]}',
    b'{"customer_id": "c", "items": [1.]}',
    b'{"customer_id": "c", "items": [1e+]}',
    b'{"customer_id": "c", "items": [-a]}',
    b'{"customer_id": "c", "items": [1,]}',
    b'{"customer_id": "c", "items": []} x',
    b'{"customer_id": "c", "items": []',
    b'{"customer_id": "c" "items": []}',
    b'{"customer_id": "c", 5: []}',
    b'\xef\xbb\xbf{}',
    b'{"customer_id": "c", "items": []}\x00',
    b'{"customer_id": "c", "items": []}\n\t \r',
    b'{"\xc3\xa9": 1, "a": 2, "\xf0\x9f\x98\x80": 3, "\xef\xbc\xa1": 4}',
    b"  ",
    b'"x"',
]  # fmt: skip


async def test_go_service_reads_and_writes_json_as_msgspec_does(go_port: int) -> None:
    """Escapes, surrogates, bad UTF-8, big and out-of-range numbers, repeated keys, broken
    documents, unknown keys (sorted by code point): the Go service's events and messages are
    Python's."""
    model = AggregateModel(Transaction)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{go_port}") as channel:
        stub = rpc.BusinessLogicStub(channel)
        for raw in TRICKY:
            try:
                cmd = model.parse(command("transaction", "t", "CreateTransaction", raw))
                expected: Any = [("TransactionCreated", msgspec.json.encode(cmd.payload))]
            except chronik.ValidationError as exc:
                expected = str(exc)
            request = pb.CommandRequest(
                domain="transaction", aggregate_id="t", type="CreateTransaction", payload=raw
            )
            try:
                answer = await stub.Handle(pb.ContextualCommand(command=request, version=-1))
                got: Any = [(e.type, e.payload) for e in answer.events]
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
                got = exc.details()
            assert got == expected, raw


async def test_go_service_survives_an_unreadable_event(go_port: int) -> None:
    """A stored event the service cannot read fails that call with INTERNAL (no chronik error
    name); the service keeps serving the next call."""
    cmd = pb.CommandRequest(domain="transaction", aggregate_id="t", type="CompleteTransaction")
    broken = pb.Event(type="TransactionCreated", sequence=0, payload=b'{"customer_id": 5}')
    async with grpc.aio.insecure_channel(f"127.0.0.1:{go_port}") as channel:
        stub = rpc.BusinessLogicStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Handle(pb.ContextualCommand(command=cmd, events=[broken], version=0))
        assert failed.value.code() == grpc.StatusCode.INTERNAL
        assert "chronik-error" not in dict(failed.value.trailing_metadata() or ())
        answer = await stub.Handle(pb.ContextualCommand(command=cmd, version=-1))
        assert answer.rejection == "Transaction does not exist"


@pytest.mark.parametrize("args", [["x"], ["65536"], ["-1"]])
def test_go_service_refuses_a_bad_port(go_binary: Path, args: list[str]) -> None:
    """A port that is not 0..65535 ends the service with exit code 2 and the usage line."""
    done = subprocess.run([str(go_binary), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: transaction-service PORT [HOST]")
