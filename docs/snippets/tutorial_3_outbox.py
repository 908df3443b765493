import asyncio
import json

from library import build_app

import chronik
from chronik.transports import Delivery, MemoryInbox, open_transport


async def main() -> None:
    # Production: open_transport("nats://nats.internal:4222") and a postgresql:// store.
    async with open_transport("memory://") as transport:
        received: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        inbox = MemoryInbox("mailer")  # PostgresInbox / StoreInbox: the effect happens once

        async def on_loan(delivery: Delivery, _unit: None) -> None:
            await received.put(json.loads(delivery.body))

        await transport.subscribe("library.loans", "mailer", inbox.handler(on_loan))

        async with build_app("memory://", transport=transport) as app:  # runs the dispatcher
            await app.dispatch(
                chronik.Command(
                    domain="book",
                    aggregate_id="dune",
                    type="Lend",
                    payload={"loan_id": "loan-1", "member": "ada"},
                )
            )  # BookLent and its outbox message commit in one transaction
            message = await asyncio.wait_for(received.get(), 5)
            print("published after commit:", message)


asyncio.run(main())
