"""Remote business logic end to end: customer as a Python service, transaction as a Node service.

Every service is a real child process on a free port; the chronik server in front of them is a
real gRPC server, called through chronik.sdk.Client. The Node dependencies are installed with
`npm ci` on first use; without node/npm the Node tests skip (fail with CHRONIK_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import msgspec
import pytest

import chronik
from chronik.aggregate import AggregateModel
from chronik.sdk import Client
from chronik.server.config import Config, RemoteDomain, build_app
from chronik.server.grpc import GrpcServer
from chronik.testing.services import unavailable
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc
from examples.shop.app import build_app as build_shop_app
from examples.shop.transaction import Transaction

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "examples" / "shop" / "node"
NODE_SERVICE = NODE_DIR / "transaction_service.js"
START_TIMEOUT = 30.0
_children = itertools.count(1)
ITEMS = [
    {"sku": "book", "price_cents": 1500, "qty": 2},
    {"sku": "pen", "price_cents": 250, "qty": 3},
]


# --- child processes ----------------------------------------------------------------------------


class Child:
    """A service process whose stdout and stderr go to files (no pipe can fill up and block it)."""

    def __init__(self, args: list[str], ready: str, workdir: Path) -> None:
        self.args = args
        self.ready = re.compile(ready)
        self.out = workdir / f"child-{next(_children)}.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> int:
        """Start the process and wait (bounded) for its ready line; returns the port it printed."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                self.args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = self.ready.search(self.output())
            if found:
                self.port = int(found.group(1))
                return self.port
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{' '.join(self.args)} did not start:\n{self.output()}")

    def output(self) -> str:
        """Everything the process printed so far."""
        try:
            return self.out.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` if the process is still running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        """The exit code (bounded wait)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Kill the process (SIGKILL) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def running(child: Child) -> Iterator[Child]:
    """``child`` started, and always killed at the end."""
    try:
        child.start()
        yield child
    finally:
        child.kill()


def _node_deps_load(node: str) -> bool:
    """True if the Node service's dependencies are installed and load."""
    script = "require('@grpc/grpc-js'); require('@grpc/proto-loader')"
    probe = subprocess.run([node, "-e", script], cwd=NODE_DIR, capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with the Node service's dependencies installed (`npm ci`, once)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm are needed for the Node business-logic service")
    lock_path = Path(tempfile.gettempdir()) / "chronik-npm-ci.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent sessions: one `npm ci` at a time
        if not _node_deps_load(node):
            try:
                subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
                    check=True,
                    capture_output=True,
                    timeout=300,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                output = getattr(exc, "stderr", b"") or b""
                unavailable(f"npm ci failed: {exc}\n{output.decode(errors='replace')}")
    return node


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A temp dir for the children's output."""
    with tempfile.TemporaryDirectory(prefix="chronik-remote-") as path:
        yield Path(path)


def customer_service(workdir: Path, port: int = 0) -> Child:
    """The customer domain as a Python gRPC service (not started)."""
    args = [sys.executable, "-m", "examples.shop.services.customer_service", "--port", str(port)]
    return Child(args, r"customer business logic on 127\.0\.0\.1:(\d+)", workdir)


def transaction_service(node: str, workdir: Path, port: int = 0) -> Child:
    """The transaction domain as a Node gRPC service (not started)."""
    return Child(
        [node, str(NODE_SERVICE), str(port)],
        r"transaction business logic on 127\.0\.0\.1:(\d+)",
        workdir,
    )


@pytest.fixture(scope="module")
def customer_port(workdir: Path) -> Iterator[int]:
    """The port of a customer service shared by the module's tests."""
    with running(customer_service(workdir)) as child:
        yield child.port


@pytest.fixture(scope="module")
def transaction_port(node: str, workdir: Path) -> Iterator[int]:
    """The port of a Node transaction service shared by the module's tests."""
    with running(transaction_service(node, workdir)) as child:
        yield child.port


def remote_app(customer: int, transaction: int) -> chronik.Chronik:
    """A memory-store app whose two domains are remote (built from a Config, as `serve` does)."""
    config = Config(
        business_logic=[
            RemoteDomain("customer", f"127.0.0.1:{customer}", timeout=5.0),
            RemoteDomain("transaction", f"127.0.0.1:{transaction}", timeout=5.0),
        ]
    )
    return build_app(config, "memory://")


@contextlib.asynccontextmanager
async def serving(app: chronik.Chronik) -> AsyncIterator[Client]:
    """A GrpcServer for ``app`` on a free port, and a Client of it."""
    server = GrpcServer(app, port=0)
    await server.start()
    try:
        async with Client(f"127.0.0.1:{server.port}") as client:
            yield client
    finally:
        await server.stop(1)


@pytest.fixture
async def client(customer_port: int, transaction_port: int) -> AsyncIterator[Client]:
    """A client of a chronik server in front of both remote services."""
    async with serving(remote_app(customer_port, transaction_port)) as c:
        yield c


def command(
    domain: str, aggregate_id: str, type_: str, payload: Any, command_id: str | None = None
) -> chronik.Command:
    return chronik.Command(
        domain=domain, aggregate_id=aggregate_id, type=type_, payload=payload, command_id=command_id
    )


async def events_of(client: Client, domain: str, aggregate_id: str) -> list[chronik.RecordedEvent]:
    return [e async for e in client.read_stream(chronik.StreamId(domain, aggregate_id))]


# --- the shop over the wire ---------------------------------------------------------------------


async def test_shop_flow_through_remote_services(client: Client) -> None:
    """Customer (Python) and transaction (Node) services run the whole shop flow through chronik."""
    created = await client.dispatch(
        command("customer", "c1", "CreateCustomer", {"name": "Ada", "email": "ada@x"}, "cmd-c1")
    )
    assert [(e.type, e.json()) for e in created.events] == [
        ("CustomerCreated", {"name": "Ada", "email": "ada@x"})
    ]
    again = await client.dispatch(
        command("customer", "c1", "CreateCustomer", {"name": "Ada", "email": "ada@x"}, "cmd-c1")
    )
    assert again.duplicate and again.events == created.events
    with pytest.raises(chronik.CommandRejected) as rejected:
        await client.dispatch(
            command("customer", "c1", "CreateCustomer", {"name": "Bo", "email": "b@x"})
        )
    assert rejected.value.reason == "Customer already exists"

    with pytest.raises(chronik.ValidationError, match=r"qty"):
        await client.dispatch(
            command(
                "transaction",
                "t1",
                "CreateTransaction",
                {"customer_id": "c1", "items": [{"sku": "x", "price_cents": 1, "qty": 0}]},
            )
        )
    assert await events_of(client, "transaction", "t1") == []

    made = await client.dispatch(
        command("transaction", "t1", "CreateTransaction", {"customer_id": "c1", "items": ITEMS})
    )
    assert [(e.type, e.json()) for e in made.events] == [
        ("TransactionCreated", {"customer_id": "c1", "items": ITEMS})
    ]
    done = await client.dispatch(command("transaction", "t1", "CompleteTransaction", {}))
    assert [(e.type, e.json()) for e in done.events] == [
        ("TransactionCompleted", {"customer_id": "c1", "amount_cents": 3750})
    ]
    assert done.version == 1
    with pytest.raises(chronik.CommandRejected) as twice:
        await client.dispatch(command("transaction", "t1", "CompleteTransaction", {}))
    assert twice.value.reason == "Transaction is already completed"
    with pytest.raises(chronik.UnknownCommandType):
        await client.dispatch(command("transaction", "t1", "Refund", {}))
    stored = await events_of(client, "transaction", "t1")
    assert [e.type for e in stored] == ["TransactionCreated", "TransactionCompleted"]


def _invalid(type_: str, payload: Any) -> tuple[str, str]:
    """What the in-process transaction schema says about ``payload`` (the expected message)."""
    raw = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    try:
        AggregateModel(Transaction).parse(command("transaction", "x", type_, raw))
    except chronik.ValidationError as exc:
        return ("invalid", str(exc))
    raise AssertionError(f"{payload!r} is valid")


Step = tuple[str, str, str, Any]  # domain, aggregate id, command type, payload
Outcome = tuple[str, Any]


def cu(aggregate_id: str, type_: str, payload: Any) -> Step:
    return ("customer", aggregate_id, type_, payload)


def tx(aggregate_id: str, type_: str, payload: Any) -> Step:
    return ("transaction", aggregate_id, type_, payload)


def appended(type_: str, payload: dict[str, Any]) -> Outcome:
    """One event, its payload bytes exactly as msgspec writes them."""
    return ("events", [(type_, msgspec.json.encode(payload))])


def rejected(reason: str) -> Outcome:
    return ("rejected", reason)


BIG = 1_000_000_000_000_000_007  # beyond 2**53, 3 * BIG within int64: exact in both languages
GOLD = [{"sku": "gold", "price_cents": BIG, "qty": 3}]
SHUFFLED = [  # keys in another order, an unknown key: the event holds the schema's fields
    {"qty": 2, "extra": [1], "price_cents": 1500, "sku": "book"},
    {"sku": "pen", "price_cents": 250, "qty": 3},
]
SCENARIO: list[tuple[Step, Outcome]] = [
    (cu("c1", "CreateCustomer", {"name": " Ada ", "email": "a@x"}),
     appended("CustomerCreated", {"name": "Ada", "email": "a@x"})),
    (cu("c1", "CreateCustomer", {"name": "Ada", "email": "a@x"}),
     rejected("Customer already exists")),
    (cu("c2", "CreateCustomer", {"name": " ", "email": "b@x"}),
     rejected("Customer name is required")),
    (cu("c9", "AddLoyaltyPoints", {"points": 5}), rejected("Customer does not exist")),
    (cu("c1", "AddLoyaltyPoints", {"points": 5}), appended("LoyaltyPointsAdded", {"points": 5})),
    (tx("t1", "CompleteTransaction", {}), rejected("Transaction does not exist")),
    (tx("t1", "CreateTransaction", {"customer_id": "c1", "items": []}),
     appended("TransactionCreated", {"customer_id": "c1", "items": []})),
    (tx("t1", "CreateTransaction", {"customer_id": "c1", "items": ITEMS}),
     rejected("Transaction already exists")),
    (tx("t1", "CompleteTransaction", {}), rejected("Transaction is empty")),
    (tx("t2", "CreateTransaction", {"customer_id": "c1", "items": SHUFFLED}),
     appended("TransactionCreated", {"customer_id": "c1", "items": ITEMS})),
    (tx("t2", "CompleteTransaction", {}),
     appended("TransactionCompleted", {"customer_id": "c1", "amount_cents": 3750})),
    (tx("t2", "CompleteTransaction", {}), rejected("Transaction is already completed")),
    (tx("t3", "CreateTransaction", {"customer_id": "c1", "items": GOLD}),
     appended("TransactionCreated", {"customer_id": "c1", "items": GOLD})),
    (tx("t3", "CompleteTransaction", {}),
     appended("TransactionCompleted", {"customer_id": "c1", "amount_cents": 3 * BIG})),
    # transaction.py takes an empty customer id for "no transaction yet": so does the Node service
    (tx("t4", "CreateTransaction", {"customer_id": "", "items": ITEMS}),
     appended("TransactionCreated", {"customer_id": "", "items": ITEMS})),
    (tx("t4", "CreateTransaction", {"customer_id": "", "items": ITEMS}),
     appended("TransactionCreated", {"customer_id": "", "items": ITEMS})),
    (tx("t4", "CompleteTransaction", {}), rejected("Transaction does not exist")),
    (tx("t9", "Refund", {}), ("not found", "UnknownCommandType")),
]  # fmt: skip


def item(**fields: Any) -> dict[str, Any]:
    """A CreateTransaction payload with one item: a valid one changed by ``fields``."""
    return {"customer_id": "c1", "items": [{"sku": "a", "price_cents": 1, "qty": 1, **fields}]}


INVALID: list[tuple[str, Any]] = [
    ("CreateTransaction", {"customer_id": 5, "items": []}),
    ("CreateTransaction", {"customer_id": "c1"}),
    ("CreateTransaction", {"customer_id": "c1", "items": {}}),
    ("CreateTransaction", {"customer_id": "c1", "items": [5]}),
    ("CreateTransaction", {"customer_id": "c1", "items": [{"price_cents": 1, "qty": 1}]}),
    ("CreateTransaction", {"customer_id": "c1", "items": [], "note": "x"}),
    ("CreateTransaction", item(price_cents=-1)),
    ("CreateTransaction", item(qty=0)),
    ("CreateTransaction", item(price_cents=1.0)),
    ("CreateTransaction", item(sku=True)),
    ("CreateTransaction", item(qty=None, sku=None)),
    ("CreateTransaction", b'{"customer_id": "c1", "items": [{"sku": "a", "price_cents": 1e3}]}'),
    ("CreateTransaction", b"{oops"),
    ("CreateTransaction", b'{"customer_id": "c1",}'),
    ("CreateTransaction", b"[]"),
    ("CompleteTransaction", {"customer_id": "c1"}),
    ("CompleteTransaction", b"null"),
]


async def _outcome(client: Client, step: Step) -> Outcome:
    try:
        result = await client.dispatch(command(*step))
    except chronik.CommandRejected as exc:
        return rejected(exc.reason)
    except chronik.ValidationError as exc:
        return ("invalid", str(exc))
    except (chronik.UnknownCommandType, chronik.UnknownDomain) as exc:
        return ("not found", type(exc).__name__)
    return ("events", [(e.type, bytes(e.payload)) for e in result.events])


@pytest.mark.parametrize("variant", ["in-process", "remote"])
async def test_remote_and_in_process_shop_behave_identically(
    variant: str, request: pytest.FixtureRequest
) -> None:
    """The same commands give the same events (byte for byte), rejections and errors either way."""
    if variant == "remote":
        customer_port = request.getfixturevalue("customer_port")
        app = remote_app(customer_port, request.getfixturevalue("transaction_port"))
    else:
        app = build_shop_app("memory://")
    async with serving(app) as client:
        await check_scenario(client)


async def check_scenario(client: Client) -> None:
    """SCENARIO gives its outcomes and INVALID the in-process schema's messages (``client``)."""
    assert [await _outcome(client, step) for step, _ in SCENARIO] == [
        expected for _, expected in SCENARIO
    ]
    invalid = [await _outcome(client, tx("t8", t, p)) for t, p in INVALID]
    assert invalid == [_invalid(t, p) for t, p in INVALID]
    assert await events_of(client, "transaction", "t8") == []


def _random_payload(rnd: random.Random) -> bytes:
    """A CreateTransaction-like payload, often wrong in type, range, shape or JSON syntax."""

    def anything(depth: int = 0) -> Any:
        pick = rnd.random()
        if depth < 2 and pick < 0.2:
            return [anything(depth + 1) for _ in range(rnd.randint(0, 2))]
        if depth < 2 and pick < 0.3:
            return {rnd.choice(["sku", "qty", "x"]): anything(depth + 1) for _ in range(2)}
        return rnd.choice([-1, 0, 1, 2, 1.5, 2.0, "", "é", "x\n", True, None, 10**20])

    def line() -> Any:
        good = {"sku": "s", "price_cents": rnd.randint(-1, 3), "qty": rnd.randint(-1, 3), "z": 1}
        keys = rnd.sample(list(good), rnd.randint(0, 4))
        return {k: anything() if rnd.random() < 0.3 else good[k] for k in keys}

    payload: dict[str, Any] = {}
    if rnd.random() < 0.9:
        payload["customer_id"] = "c1" if rnd.random() < 0.8 else anything()
    if rnd.random() < 0.9:
        payload["items"] = [line() for _ in range(rnd.randint(0, 3))]
    if rnd.random() < 0.05:
        payload["note"] = anything()
    raw = bytearray(msgspec.json.encode(payload))
    for _ in range(rnd.choice([0, 0, 0, 1, 2])):  # break the JSON now and then
        at = rnd.randrange(len(raw) + 1)
        if rnd.random() < 0.5:
            raw.insert(at, rnd.choice(b'{}[]",:-+.eE019 \\tnu'))
        else:
            del raw[at : at + 1]
    try:
        raw.decode()
    except UnicodeDecodeError:  # half an "é": Python's schema raises UnicodeDecodeError (a bug)
        return msgspec.json.encode(payload)
    return bytes(raw)


async def test_node_validation_matches_python_on_random_payloads(transaction_port: int) -> None:
    """On 400 random (mostly invalid) payloads the Node service and the Python schema agree:
    the same events byte for byte, or the same InvalidCommand message."""
    await check_random_payloads(transaction_port)


async def check_random_payloads(port: int) -> None:
    """The service on ``port`` and the Python schema agree on 400 random payloads."""
    rnd = random.Random(20261124)
    model = AggregateModel(Transaction)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rpc.BusinessLogicStub(channel)
        for _ in range(400):
            raw = _random_payload(rnd)
            request = pb.CommandRequest(
                domain="transaction", aggregate_id="t", type="CreateTransaction", payload=raw
            )
            try:
                cmd = model.parse(command("transaction", "t", "CreateTransaction", raw))
                expected: Any = [
                    ("TransactionCreated", msgspec.json.encode(cmd.payload)),
                ]
            except chronik.ValidationError as exc:
                expected = str(exc)
            try:
                answer = await stub.Handle(pb.ContextualCommand(command=request, version=-1))
                got: Any = [(e.type, e.payload) for e in answer.events]
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
                got = exc.details()
            assert got == expected, raw


# --- failures -----------------------------------------------------------------------------------


async def test_node_service_down_then_restarted(
    node: str, workdir: Path, customer_port: int
) -> None:
    """With the Node service killed a command fails UNAVAILABLE and stores nothing; restarted on
    the same port, the next command works; SIGTERM stops the service with exit code 0."""
    await check_down_then_restarted(
        lambda port: transaction_service(node, workdir, port), customer_port
    )


async def check_down_then_restarted(service: Callable[[int], Child], customer_port: int) -> None:
    """The transaction service ``service(port)`` killed, restarted on its port, then stopped."""
    with running(service(0)) as first:
        async with serving(remote_app(customer_port, first.port)) as client:
            await client.dispatch(
                command(
                    "transaction", "t1", "CreateTransaction", {"customer_id": "c1", "items": ITEMS}
                )
            )
            first.kill()
            with pytest.raises(chronik.ServiceUnavailable):
                await client.dispatch(command("transaction", "t1", "CompleteTransaction", {}))
            assert [e.type for e in await events_of(client, "transaction", "t1")] == [
                "TransactionCreated"
            ]
            with running(service(first.port)) as restarted:
                done = await client.dispatch(
                    command("transaction", "t1", "CompleteTransaction", {})
                )
                restarted.send(signal.SIGTERM)
                assert restarted.wait(10) == 0, restarted.output()
            assert [(e.type, e.json()) for e in done.events] == [
                ("TransactionCompleted", {"customer_id": "c1", "amount_cents": 3750})
            ]


async def test_node_service_answers_the_wire_contract(transaction_port: int) -> None:
    """Called directly, the Node service folds a snapshot and events, answers NOT_FOUND for an
    unknown command type and INVALID_ARGUMENT for a bad payload, with chronik's error name."""
    await check_wire_contract(transaction_port, "transaction.node")


async def check_wire_contract(port: int, state_type: str) -> None:
    """The transaction service on ``port`` answers the wire contract (snapshots: ``state_type``)."""
    created = pb.Event(
        type="TransactionCreated",
        sequence=0,
        payload=msgspec.json.encode({"customer_id": "c1", "items": ITEMS}),
    )

    def contextual(type_: str, payload: bytes, **kw: Any) -> pb.ContextualCommand:
        cmd = pb.CommandRequest(domain="transaction", aggregate_id="t", type=type_, payload=payload)
        return pb.ContextualCommand(command=cmd, **kw)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rpc.BusinessLogicStub(channel)
        answer = await stub.Handle(
            contextual("CompleteTransaction", b"{}", events=[created], version=0)
        )
        assert [(e.type, msgspec.json.decode(e.payload)) for e in answer.events] == [
            ("TransactionCompleted", {"customer_id": "c1", "amount_cents": 3750})
        ]
        assert not answer.rejection and not answer.HasField("snapshot")

        # at version 98 the next event is the 100th: the service offers a snapshot ...
        answer = await stub.Handle(
            contextual("CompleteTransaction", b"{}", events=[created], version=98)
        )
        assert answer.HasField("snapshot") and answer.snapshot.type == state_type
        # ... and a later command starts from it
        later = await stub.Handle(
            contextual("CompleteTransaction", b"{}", snapshot=answer.snapshot, version=99)
        )
        assert later.rejection == "Transaction is already completed"

        for type_, payload, code, error in [
            ("Refund", b"{}", grpc.StatusCode.NOT_FOUND, "UnknownCommandType"),
            ("CreateTransaction", b"{oops", grpc.StatusCode.INVALID_ARGUMENT, "InvalidCommand"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Handle(contextual(type_, payload))
            assert failed.value.code() == code
            assert ("chronik-error", error) in tuple(failed.value.trailing_metadata() or ())


async def test_chronik_serve_with_remote_business_logic(
    node: str, workdir: Path, tmp_path: Path
) -> None:
    """`chronik serve --config` with remote business logic serves a command, exits 0 on SIGTERM."""
    with (
        running(customer_service(workdir)) as customers,
        running(transaction_service(node, workdir)) as transactions,
    ):
        config = tmp_path / "chronik-remote.yaml"
        config.write_text(
            "business_logic:\n"
            f"  - {{domain: customer, address: '127.0.0.1:{customers.port}', timeout: 5}}\n"
            f"  - {{domain: transaction, address: '127.0.0.1:{transactions.port}', timeout: 5}}\n"
        )
        await check_serve(config, workdir, tmp_path)


async def check_serve(config: Path, workdir: Path, tmp_path: Path) -> None:
    """`chronik serve --config config` serves a transaction command and exits 0 on SIGTERM."""
    args = [
        sys.executable,
        "-m",
        "chronik.cli",
        "serve",
        "--config",
        str(config),
        "--store",
        f"sqlite:///{tmp_path}/e.db",
        "--port",
        "0",
    ]
    server = Child(args, r"gRPC:\s+127\.0\.0\.1:(\d+)", workdir)
    with running(server):
        async with Client(f"127.0.0.1:{server.port}") as client:
            made = await client.dispatch(
                command(
                    "transaction",
                    "t1",
                    "CreateTransaction",
                    {"customer_id": "c1", "items": ITEMS},
                )
            )
        assert [e.type for e in made.events] == ["TransactionCreated"]
        server.send(signal.SIGTERM)
        assert server.wait(15) == 0, server.output()
