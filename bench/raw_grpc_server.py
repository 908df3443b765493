"""The raw baseline of W10: a bare grpc.aio CommandGateway doing a plain sqlite3 append per call.

Per call: decode the payload with orjson (the validation step), append the received JSON bytes
as the event's payload (``bench.raw.append_encoded``: no re-encoding), answer with the event.

python -m bench.raw_grpc_server PATH   (prints "raw gRPC on 127.0.0.1:PORT")
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import grpc
import orjson

from bench import raw
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc


class RawGateway(rpc.CommandGatewayServicer):
    """Decode the payload, check and bump the version, insert, commit: no chronik involved."""

    def __init__(self, path: str) -> None:
        self.conn = raw.connect(path)
        self.versions: dict[str, int | None] = {}

    async def Handle(self, request: pb.CommandRequest, context: Any) -> pb.CommandResponse:
        orjson.loads(request.payload)
        expected = self.versions.get(request.aggregate_id)
        last = raw.append_encoded(self.conn, request.aggregate_id, [request.payload], expected)
        self.versions[request.aggregate_id] = last
        event = pb.Event(
            domain=request.domain,
            aggregate_id=request.aggregate_id,
            sequence=last,
            type=request.type,
            payload=request.payload,
        )
        return pb.CommandResponse(events=[event], version=last)


async def main(path: str) -> None:
    server = grpc.aio.server()
    rpc.add_CommandGatewayServicer_to_server(RawGateway(path), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"raw gRPC on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
