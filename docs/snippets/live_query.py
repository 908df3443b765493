import asyncio
import json

import httpx

import chronik
from chronik.projections import Projection, ReadModel, Table
from chronik.server.http import LiveQuery, create_http_app
from chronik.server.http_server import HttpServer

orders = Projection("orders", tables=[Table("orders", {"id": str, "status": str}, "id")])


@orders.on("order.placed")
def placed(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    rm.upsert("orders", id=event.stream.aggregate_id, status=event.json()["status"])


async def place(app: chronik.Chronik, order_id: str) -> None:
    event = chronik.EventData("order.placed", {"status": "open"})
    done = await app.store.append(chronik.StreamId("order", order_id), [event])
    await app.wait_for(done.position)  # the projection has the row


async def first_message(http: httpx.AsyncClient, last_event_id: str | None) -> dict[str, str]:
    """Connect as EventSource does (Last-Event-ID on a reconnect), read one event, leave."""
    headers = {"accept": "text/event-stream"}
    if last_event_id:
        headers["last-event-id"] = last_event_id
    message: dict[str, str] = {}
    async with http.stream("GET", "/v1/queries/open?status=open", headers=headers) as r:
        async for line in r.aiter_lines():
            if line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                message[key] = value
            elif not line and "event" in message:
                return message
    return message


async def main() -> None:
    app = chronik.Chronik(store="memory://")
    app.add_projection(orders)
    query = LiveQuery("open", projection="orders", table="orders", params=("status",))
    async with app:
        await place(app, "o1")
        server = HttpServer(create_http_app(app, queries=[query]), port=0)
        await server.start()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            page = await first_message(http, None)
            print(page["event"], json.loads(page["data"]))  # the rows, reset false
            await place(app, "o2")  # committed while the client is away
            again = await first_message(http, page["id"])
            print(again["event"], json.loads(again["data"]))  # the page again, reset true
            async with asyncio.timeout(5):  # an id still current: only what changes next
                resumed = asyncio.create_task(first_message(http, again["id"]))
                await asyncio.sleep(0.5)
                await place(app, "o3")
                change = await resumed
            print(change["event"], json.loads(change["data"]))  # upsert o3, no page
        await server.stop()


asyncio.run(main())
