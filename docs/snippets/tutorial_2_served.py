# --8<-- [start:serve]
import asyncio
import json
import urllib.error
import urllib.request

from library import build_app

import chronik
from chronik.sdk import Client
from chronik.server.grpc import GrpcServer
from chronik.server.http import LiveQuery, create_http_app
from chronik.server.http_server import HttpServer


async def serve() -> tuple[GrpcServer, HttpServer]:
    """What `chronik serve --config library.yaml` starts, here on free ports (port 0)."""
    grpc_server = GrpcServer(build_app("sqlite:///data/library.db"), port=0)
    await grpc_server.start()  # opens the app: its projection and saga run
    app = grpc_server.app
    query = LiveQuery("loans", projection="loans", table="loans", params=("member",))
    http_server = HttpServer(create_http_app(app, runner=app.runner, queries=[query]), port=0)
    await http_server.start()
    return grpc_server, http_server


# --8<-- [end:serve]


# --8<-- [start:grpc]
async def over_grpc(address: str) -> None:
    async with Client(address, timeout=5) as client:  # api_key=... when auth is on
        result = await client.dispatch(
            chronik.Command(
                domain="book",
                aggregate_id="dune",
                type="Lend",
                payload={"loan_id": "loan-1", "member": "ada"},
                command_id="lend-dune-1",  # retried after a timeout, it still applies once
            )
        )
        print("gRPC:", result.events[0].type, "duplicate:", result.duplicate)
        async for event in client.read_stream(chronik.StreamId("book", "dune")):
            print("  ", event.sequence, event.type, event.json())


# --8<-- [end:grpc]


# --8<-- [start:http]
def post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def over_http(base: str) -> None:
    command = {
        "domain": "book",
        "aggregate_id": "emma",
        "type": "Lend",
        "payload": {"loan_id": "loan-2", "member": "ada"},
        "command_id": "lend-emma-1",
    }
    result = post(f"{base}/v1/commands?wait=projections", command)  # returns once applied
    print("HTTP:", [event["type"] for event in result["events"]])
    print("loans of ada:", get(f"{base}/v1/queries/loans?member=ada"))
    try:  # another loan of the same book: the business logic refuses it
        post(f"{base}/v1/commands", {**command, "command_id": "lend-emma-2"})
    except urllib.error.HTTPError as err:  # application/problem+json, never a stack trace
        print("HTTP", err.code, json.load(err)["reason"])


# --8<-- [end:http]


# --8<-- [start:main]
async def main() -> None:
    grpc_server, http_server = await serve()
    try:
        await over_grpc(f"127.0.0.1:{grpc_server.port}")
        await asyncio.to_thread(over_http, f"http://127.0.0.1:{http_server.port}")
    finally:
        await http_server.stop()
        await grpc_server.stop()


asyncio.run(main())
# --8<-- [end:main]
