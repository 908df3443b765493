"""The customer domain as a Python gRPC BusinessLogic service (the same decider as in-process).

    python -m examples.shop.services.customer_service --port 50061

Then point the server at it (examples/shop/chronik-remote.yaml).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from chronik.sdk import serve_business_logic
from examples.shop.customer import customer
from examples.shop.events import registry


async def main(host: str, port: int) -> None:
    server, bound = await serve_business_logic(customer, registry, f"{host}:{port}")
    print(f"customer business logic on {host}:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50061)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
