"""CloudEvents both ways in one process: chronik's HTTP app with the receiver route stores
what it accepts on a transport, a consumer handles it, and a cloudevents+http:// transport
posts to the route (as `chronik serve` does with `cloudevents: {receiver: true}`)."""

import asyncio
import socket

import uvicorn

import chronik
from chronik.server.http import create_http_app
from chronik.server.http_cloudevents import cloudevents_routes
from chronik.transports import Delivery, Message, open_transport
from chronik.transports.cloudevents_receiver import CloudEventsReceiver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main() -> None:
    port = free_port()
    got: asyncio.Queue[Delivery] = asyncio.Queue()

    async def bill(delivery: Delivery) -> None:
        await got.put(delivery)

    # The receiving side. memory:// is volatile (a crash loses accepted events): use a durable
    # transport in production (postgresql://, nats://, amqp://); the receiver refuses
    # memory:// unless told volatile=True.
    async with chronik.Chronik(store="memory://") as app, open_transport("memory://") as store_on:
        await store_on.subscribe("orders.placed", "billing", bill)
        receiver = CloudEventsReceiver(["orders.placed"], volatile=True)
        receiver.attach(store_on)
        http = create_http_app(app, extra_routes=cloudevents_routes(receiver))
        server = uvicorn.Server(uvicorn.Config(http, port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
            await asyncio.sleep(0.01)

        # The sending side: any chronik transport user, e.g. the outbox dispatcher.
        url = f"cloudevents+http://127.0.0.1:{port}/v1/cloudevents?mode=binary"
        async with open_transport(url) as sender:
            await sender.publish(
                Message(topic="orders.placed", body=b'{"order": 17}', key="customer-4")
            )
        delivery = await asyncio.wait_for(got.get(), 10)
        print("billing got", delivery.body.decode(), "key", delivery.key)
        server.should_exit = True
        await serving


asyncio.run(main())
