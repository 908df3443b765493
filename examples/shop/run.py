"""`make demo`: the shop driven in-process through commands, on its own ./data/demo.db.

Creates a customer, shows an idempotent retry, a rejection, a payload that fails its schema,
a transaction created and completed, loyalty points added for it, a stale command refused,
the streams read back, and what a live subscription saw.

The demo awards the loyalty points itself (no saga runs here), so it never writes to the store
`make run` serves (./data/events.db, or $CHRONIK_STORE), where the server's loyalty saga would
award them a second time: `--store URL` picks another store, CHRONIK_STORE is not read.
"""

from __future__ import annotations

import argparse
import asyncio

import chronik
from examples.shop.app import build_app

STORE = "sqlite:///data/demo.db"


def say(text: str) -> None:
    print(text, flush=True)


async def main(url: str = STORE) -> None:
    """Run the scenario on the store at ``url``."""
    async with build_app(url) as app:
        store, registry = app.store, app.registry
        say(f"chronik {chronik.__version__}: store {url}, domains {', '.join(app.bus.domains)}")
        seen: list[chronik.RecordedEvent] = []
        live = store.subscribe(after=await store.head())

        async def follow(count: int) -> None:
            async for event in live:
                seen.append(event)
                if len(seen) == count:
                    return

        follower = asyncio.create_task(follow(4))  # this scenario appends 4 events
        run = chronik.new_event_id()[-8:]
        cust, txn = f"cust-{run}", f"txn-{run}"

        def cmd(
            domain: str, aggregate_id: str, type_: str, payload: object, **kw: object
        ) -> chronik.Command:
            return chronik.Command(
                domain=domain,
                aggregate_id=aggregate_id,
                type=type_,
                payload=payload,
                metadata={"correlation_id": f"demo-{run}"},
                **kw,  # type: ignore[arg-type]
            )

        create = cmd(
            "customer",
            cust,
            "CreateCustomer",
            {"name": "Ada", "email": "ada@example.com"},
            command_id=f"create-{run}",
        )
        first = await app.dispatch(create)
        event = first.events[0]
        say(
            f"CreateCustomer -> {event.type} at sequence {event.sequence}, "
            f"metadata {dict(event.metadata)}"
        )
        again = await app.dispatch(create)
        say(
            f"dispatched the same command id again: duplicate = {again.duplicate}, "
            f"same events = {again.events == first.events}"
        )

        for bad in (
            cmd("customer", cust, "CreateCustomer", {"name": "Ada", "email": "x@y"}),
            cmd("customer", cust, "CreateCustomer", {"name": 42}),
            cmd("warehouse", "w1", "Restock", {}),
        ):
            try:
                await app.dispatch(bad)
            except (chronik.CommandRejected, chronik.ValidationError, chronik.UnknownDomain) as err:
                say(f"refused {bad.domain}/{bad.type}: {type(err).__name__}: {err}")

        items = [
            {"sku": "book-42", "price_cents": 1500, "qty": 2},
            {"sku": "pen-7", "price_cents": 250, "qty": 3},
        ]
        await app.dispatch(
            cmd("transaction", txn, "CreateTransaction", {"customer_id": cust, "items": items})
        )
        done = await app.dispatch(cmd("transaction", txn, "CompleteTransaction", {}))
        completed = registry.decode(done.events[0])
        say(f"completed {txn}: {completed}")
        try:
            await app.dispatch(cmd("transaction", txn, "CompleteTransaction", {}))
        except chronik.CommandRejected as err:
            say(f"completing it twice is rejected: {err.reason}")

        points = completed.amount_cents // 100
        await app.dispatch(cmd("customer", cust, "AddLoyaltyPoints", {"points": points}))
        try:
            await app.dispatch(
                cmd("customer", cust, "AddLoyaltyPoints", {"points": 1}, expected_sequence=0)
            )
        except chronik.WrongExpectedVersion as err:
            say(f"refused a command for a stale version: {err}")

        say(f"{txn}:")
        async for e in store.read_stream(chronik.StreamId("transaction", txn)):
            say(f"  {e.sequence}  {e.type:<22} {registry.decode(e)}")
        say(f"customer state: {await app.load('customer', cust)}")

        await asyncio.wait_for(follower, 5)
        await live.close()
        say(
            f"the live subscription received {len(seen)} events: " + ", ".join(e.type for e in seen)
        )
        streams = len([s async for s in store.list_streams()])
        say(f"store now holds {streams} streams, head position {await store.head()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=STORE, help=f"the demo's store (default {STORE})")
    asyncio.run(main(parser.parse_args().store))
