"""Step definitions of features/shop.feature: the shop served by a real gRPC server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from chronik.projections import query
from chronik.server.grpc import GrpcServer
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc
from examples.shop.app import build_app, projections

T = TypeVar("T")
scenarios("features/shop.feature")


class Shop:
    """A served shop, a channel to it, and the last answer."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = build_app("memory://")
        self.server = GrpcServer(self.app, port=0, projections=projections(self.app))
        self.run(self.server.start())
        self.channel = self.run(self._connect())
        self.gateway = rpc.CommandGatewayStub(self.channel)
        self.response: pb.CommandResponse | None = None
        self.error: grpc.aio.AioRpcError | None = None

    async def _connect(self) -> grpc.aio.Channel:  # a channel belongs to the loop it is made on
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.server.port}")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def send(self, domain: str, aggregate_id: str, type_: str, payload: Any) -> None:
        request = pb.CommandRequest(
            domain=domain,
            aggregate_id=aggregate_id,
            type=type_,
            payload=json.dumps(payload).encode(),
        )

        async def call() -> pb.CommandResponse:  # the call must be made on our loop
            response: pb.CommandResponse = await self.gateway.Handle(request)
            return response

        try:
            self.response, self.error = self.run(call()), None
        except grpc.aio.AioRpcError as exc:
            self.response, self.error = None, exc

    def close(self) -> None:
        self.run(self.channel.close())
        self.run(self.server.stop(1))
        self.loop.close()


@pytest.fixture
def shop() -> Iterator[Shop]:
    s = Shop()
    yield s
    s.close()


@given("the shop is served over gRPC")
def served(shop: Shop) -> None:
    assert shop.server.port > 0


@given(parsers.parse('customer "{customer}" exists'))
def customer_exists(shop: Shop, customer: str) -> None:
    shop.send("customer", customer, "CreateCustomer", {"name": "X", "email": "x@example.com"})
    assert shop.error is None


@when(parsers.parse('customer "{customer}" is created with name "{name}" and email "{email}"'))
def create_customer(shop: Shop, customer: str, name: str, email: str) -> None:
    shop.send("customer", customer, "CreateCustomer", {"name": name, "email": email})


@when(parsers.parse('customer "{customer}" buys in transaction "{txn}":'))
def create_transaction(shop: Shop, customer: str, txn: str, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    items = [
        {k: (v if k == "sku" else int(v)) for k, v in zip(header, row, strict=True)} for row in rows
    ]
    shop.send("transaction", txn, "CreateTransaction", {"customer_id": customer, "items": items})
    assert shop.error is None, shop.error


@when(parsers.parse('transaction "{txn}" is completed'))
def complete(shop: Shop, txn: str) -> None:
    shop.send("transaction", txn, "CompleteTransaction", {})


@when(parsers.parse('a "{type_}" command for customer "{customer}" carries {payload}'))
def raw_customer_command(shop: Shop, type_: str, customer: str, payload: str) -> None:
    shop.send("customer", customer, type_, json.loads(payload))


@when(parsers.parse('a "{type_}" command for "{domain}" "{aggregate_id}" carries {payload}'))
def raw_command(shop: Shop, type_: str, domain: str, aggregate_id: str, payload: str) -> None:
    shop.send(domain, aggregate_id, type_, json.loads(payload))


@then(parsers.parse('the last call answered a "{type_}" event with amount_cents {amount:d}'))
def answered(shop: Shop, type_: str, amount: int) -> None:
    assert shop.error is None and shop.response is not None, shop.error
    (event,) = shop.response.events
    assert event.type == type_ and json.loads(event.payload)["amount_cents"] == amount


@then(parsers.parse('customer "{customer}" eventually has {points:d} loyalty points'))
def has_points(shop: Shop, customer: str, points: int) -> None:
    async def wait() -> None:
        async with asyncio.timeout(15):
            while (await shop.app.load("customer", customer)).points != points:
                await asyncio.sleep(0.02)

    shop.run(wait())


@then(
    parsers.parse(
        'the receipts read model lists transaction "{txn}" of customer "{customer}" '
        "for {amount:d} cents"
    )
)
def receipt(shop: Shop, txn: str, customer: str, amount: int) -> None:
    async def wait() -> list[dict[str, Any]]:
        async with asyncio.timeout(15):
            while True:
                rows = await query(shop.app.store, "receipts", "receipts", {"transaction_id": txn})
                if rows:
                    return rows
                await asyncio.sleep(0.02)

    assert shop.run(wait()) == [
        {"transaction_id": txn, "customer_id": customer, "amount_cents": amount}
    ]


@then(parsers.parse('the call fails with {code} "{reason}"'))
def fails_with(shop: Shop, code: str, reason: str) -> None:
    assert shop.error is not None, "the call succeeded"
    assert shop.error.code().name == code and shop.error.details() == reason


@then(parsers.parse('the call fails with {code} naming "{name}"'))
def fails_naming(shop: Shop, code: str, name: str) -> None:
    assert shop.error is not None, "the call succeeded"
    assert shop.error.code().name == code and name in (shop.error.details() or "")
