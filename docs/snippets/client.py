import asyncio

import msgspec

import chronik
from chronik.sdk import Client
from chronik.server.grpc import GrpcServer

registry = chronik.EventRegistry()


@registry.event()
class CustomerCreated(msgspec.Struct):
    name: str


class CreateCustomer(msgspec.Struct):
    name: str


def decide(command: chronik.Command, state: dict) -> object:
    if state:
        raise chronik.CommandRejected("Customer already exists")
    return CustomerCreated(command.payload.name)


async def main() -> None:
    app = chronik.Chronik(store="memory://", registry=registry)
    app.add_decider(
        "customer", decide=decide, evolve=lambda s, e: {"name": e.name}, initial=dict,
        commands={"CreateCustomer": CreateCustomer},
    )
    server = GrpcServer(app, port=0)  # what `chronik serve` runs; port 0: any free port
    port = await server.start()
    try:
        async with Client(f"127.0.0.1:{port}", timeout=5) as client:  # api_key= / token=
            print(client, await client.health())
            command = chronik.Command(
                domain="customer", aggregate_id="c1", type="CreateCustomer",
                payload={"name": "Ada"},
            )
            result = await client.dispatch(command)  # gets a command id: retries apply once
            print(result.events[0].type, "version", result.version)
            try:
                await client.dispatch(chronik.Command(
                    domain="customer", aggregate_id="c1", type="CreateCustomer",
                    payload={"name": "Ada"}, expected_sequence=5,
                ))
            except chronik.WrongExpectedVersion as err:  # typed, with its data
                print("conflict:", err.stream, "expected", err.expected, "actual", err.actual)
            stream = chronik.StreamId("customer", "c1")
            print([e.json() async for e in client.read_stream(stream, backward=True)])
            print("head:", await client.head())
            print("streams:", [str(i.stream) async for i in client.list_streams("customer")])
            catalog = await client.describe()  # command and event types with JSON Schemas
            print("commands:", [c["type"] for d in catalog["domains"] for c in d["commands"]])
            print("projections:", await client.projections())  # pause(), rebuild(), ...
            async with client.subscribe(domains=["customer"]) as events:  # reconnects
                async for event in events:
                    print("event:", event.type, event.position)
                    break
    finally:
        await server.stop()


asyncio.run(main())
