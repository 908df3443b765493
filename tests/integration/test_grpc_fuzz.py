"""Fuzzing the gRPC edge of the served shop on SQLite: no input gets INTERNAL or UNKNOWN, and
the store still works afterwards (health says SERVING only if it does)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import msgspec
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chronik
from chronik.sdk import Client
from chronik.server.grpc import GrpcServer
from chronik.v1 import chronik_pb2 as pb
from examples.shop.app import build_app, projections
from examples.shop.events import registry
from tests.conftest import SCALE

BATCH = 30  # requests per example
EXAMPLES = 100 * SCALE  # 3,000 requests in make test
BUDGET = 60.0 * SCALE  # seconds the whole run may take
BAD = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED)

METHODS: dict[str, tuple[type[Message], bool]] = {
    "/chronik.v1.CommandGateway/Handle": (pb.CommandRequest, False),
    "/chronik.v1.EventStore/Append": (pb.AppendRequest, False),
    "/chronik.v1.EventStore/ReadStream": (pb.ReadStreamRequest, True),
    "/chronik.v1.EventStore/ReadAll": (pb.ReadAllRequest, True),
    "/chronik.v1.EventStore/Subscribe": (pb.SubscribeRequest, True),
    "/chronik.v1.EventStore/ReadQuery": (pb.ReadQueryRequest, True),
    "/chronik.v1.EventStore/AppendTagged": (pb.AppendTaggedRequest, False),
    "/grpc.health.v1.Health/Check": (health_pb2.HealthCheckRequest, False),
}
WORDS = [
    "customer",
    "transaction",
    "CreateCustomer",
    "AddLoyaltyPoints",
    "CreateTransaction",
    "CompleteTransaction",
    *registry.names(),
    "c1",
    "",
    "1",
    "3:1",
    "-1",
    "100000000000000000000",
    "9223372036854775807",
    "x" * 300,
    "\x00",
    "Not A Domain",
    "course:c1",
    "dcb",
]
PAYLOADS = [
    b'{"name": "Ada", "email": "a@x"}',
    b'{"points": 5}',
    b'{"customer_id": "c1", "items": [{"sku": "b", "price_cents": 1, "qty": 1}]}',
    b"{}",
    b"[" * 3000 + b"]" * 3000,
    b'{"n": 123456789012345678901234567890}',
    b'{"n": NaN}',
    b'{"s": "\\ud800"}',
    b'{"n": 1e400}',
]
INT_RANGES = {
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
texts = st.sampled_from(WORDS) | st.text(max_size=20)
payloads = (
    st.sampled_from(PAYLOADS)
    | json_values.map(msgspec.json.encode)
    | st.dictionaries(st.sampled_from(["name", "email", "points", "items"]), json_values).map(
        msgspec.json.encode
    )
    | st.binary(max_size=40)
)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        return texts
    if field.type == FieldDescriptor.TYPE_BYTES:
        return payloads
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    low, high = INT_RANGES[field.type]
    return st.integers(0, 3) | st.integers(low, high) | st.sampled_from([low, high, max(low, -1)])


def messages(cls: type[Message]) -> st.SearchStrategy[Message]:
    """Valid messages of ``cls`` with random (often hostile) field values."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in cls.DESCRIPTOR.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            fields[field.name] = st.dictionaries(texts, texts, max_size=3)
        elif field.message_type is not None:
            inner = messages(getattr(pb, field.message_type.name))
            fields[field.name] = st.lists(inner, max_size=3) if field.is_repeated else inner
        elif field.is_repeated:
            fields[field.name] = st.lists(_scalar(field), max_size=3)
        else:
            fields[field.name] = _scalar(field)
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: cls(**kw))


def mutated(raw: bytes) -> st.SearchStrategy[bytes]:
    """A serialized message with bytes flipped, cut off or inserted."""
    size = max(len(raw), 1)
    flip = st.tuples(st.integers(0, size - 1), st.integers(0, 255)).map(
        lambda p: raw[: p[0]] + bytes([p[1]]) + raw[p[0] + 1 :]
    )
    cut = st.integers(0, size).map(lambda n: raw[:n])
    insert = st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=4)).map(
        lambda p: raw[: p[0]] + p[1] + raw[p[0] :]
    )
    return flip | cut | insert


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """One request: a method and the bytes sent (valid, mutated or random)."""
    method = draw(st.sampled_from(sorted(METHODS)))
    valid = draw(messages(METHODS[method][0])).SerializeToString()
    kind = draw(st.sampled_from(["valid", "valid", "mutated", "random"]))
    if kind == "mutated":
        return method, draw(mutated(valid))
    if kind == "random":
        return method, draw(st.binary(max_size=60))
    return method, valid


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "events.db"


@pytest.fixture
async def server(shop: Path) -> AsyncIterator[GrpcServer]:
    app = build_app(f"sqlite:///{shop}")
    srv = GrpcServer(app, port=0, projections=projections(app), raw_append=True)
    await srv.start()
    yield srv
    await srv.stop(1)


async def send(channel: grpc.aio.Channel, method: str, body: bytes) -> grpc.StatusCode:
    """Send raw bytes; the status code (OK included). Streams are read for a moment."""
    try:
        if not METHODS[method][1]:
            await channel.unary_unary(method)(body, timeout=10)
            return grpc.StatusCode.OK
        call = channel.unary_stream(method)(body, timeout=10)
        try:
            async with asyncio.timeout(0.05):
                async for _ in call:
                    pass
        except TimeoutError:
            pass  # a live subscription: enough
        finally:
            call.cancel()
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


@pytest.mark.drill
@pytest.mark.timeout(120 * SCALE)
async def test_fuzzed_requests_get_typed_statuses_and_the_store_survives(
    server: GrpcServer,
) -> None:
    """3,000 generated, mutated and random requests over every method: none is INTERNAL,
    UNKNOWN or hangs; afterwards a good command succeeds and health says SERVING."""
    seen: dict[str, int] = {}
    bad: list[tuple[str, bytes, str]] = []
    started = time.monotonic()
    address = f"127.0.0.1:{server.port}"
    batch = await _generate()
    async with grpc.aio.insecure_channel(address) as channel:
        for method, body in batch:
            code = await send(channel, method, body)
            seen[code.name] = seen.get(code.name, 0) + 1
            if code in BAD:
                bad.append((method, body[:200], code.name))
        assert time.monotonic() - started < BUDGET, seen
        assert not bad, (bad[:5], seen)
        assert len(batch) >= BATCH * EXAMPLES * 0.9
        assert seen.get("OK", 0) > 100 and seen.get("INVALID_ARGUMENT", 0) > 100, seen
        async with Client(address) as client:
            result = await client.dispatch(
                chronik.Command(
                    domain="customer",
                    aggregate_id=f"after-fuzz-{time.time_ns()}",
                    type="CreateCustomer",
                    payload={"name": "Ada", "email": "a@x"},
                )
            )
            assert result.version == 0
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def _generate() -> list[tuple[str, bytes]]:
    """The requests, drawn by Hypothesis (off the event loop: it runs its own search)."""
    drawn: list[tuple[str, bytes]] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=SCALE == 1,  # make test: the same requests every run; make soak: new ones
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(requests(), min_size=BATCH, max_size=BATCH))
    def collect(batch: list[tuple[str, bytes]]) -> None:
        drawn.extend(batch)

    await asyncio.to_thread(collect)
    return drawn[: BATCH * EXAMPLES]
