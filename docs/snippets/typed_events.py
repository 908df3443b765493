import asyncio
from typing import Any

import msgspec

import chronik

registry = chronik.EventRegistry()


@registry.event("customer.registered", version=2)
class CustomerRegistered(msgspec.Struct):
    name: str
    email: str


@registry.upcaster("customer.registered", from_version=1)
def v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:  # v1 had one "contact" field
    return {"name": payload["name"], "email": payload["contact"]}


async def main() -> None:
    async with chronik.open_store("memory://") as store:
        live = store.subscribe(types=["customer.registered"])  # catch up, then follow
        old = chronik.EventData(
            "customer.registered", {"name": "Bo", "contact": "bo@x"}, schema_version=1
        )
        await store.append(chronik.StreamId("customer", "c1"), [old])
        new = registry.to_event_data(CustomerRegistered("Ada", "ada@x"))
        await store.append(chronik.StreamId("customer", "c2"), [new])
        async with live:
            async for event in live:
                print(event.stream, registry.decode(event))  # v1 is upcast on read
                if event.stream.aggregate_id == "c2":
                    break


asyncio.run(main())
