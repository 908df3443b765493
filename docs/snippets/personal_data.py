import asyncio

import msgspec

import chronik
from chronik.lifecycle.forget import forget_subject
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.personal import KeyRing

registry = chronik.EventRegistry()


@registry.event("customer.registered", personal={"email": "customer_id", "name": "customer_id"})
class CustomerRegistered(msgspec.Struct):
    customer_id: str  # the subject: never personal itself
    email: str  # once forgotten: "[forgotten]"
    name: str | None = None  # optional, so once forgotten: None


async def main() -> None:
    async with chronik.open_store("sqlite:///shop.db") as store:
        keys = KeyRing(StoreKeyStore(store), ttl=60)  # keys in chronik_subject_keys
        registry.use_keys(keys)
        event = CustomerRegistered("c-1", "ada@example.com", "Ada")
        await registry.load_keys([event])  # creates c-1's key (the command bus does this)
        await store.append(chronik.StreamId("customer", "c-1"), [registry.to_event_data(event)])

        (stored,) = [e async for e in store.read_stream(chronik.StreamId("customer", "c-1"))]
        print("stored:", stored.json()["email"])  # {'$enc': 'v1', 's': 'c-1', 'c': '...'}
        print("decoded:", await registry.adecode(stored))

        await forget_subject(store, keys, "c-1", by="dpo@example.com", reason="erasure request")
        print("forgotten:", registry.decode(stored))  # placeholders, no error


asyncio.run(main())
