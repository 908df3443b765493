"""The shop's notifications service: a welcome email per `customer.registered`, in its own process.

    python -m examples.shop.services.notifications --transport nats://127.0.0.1:4222

It consumes the integration events the shop's outbox publishes (group "notifications"), and
records each email in its own SQLite file in the same transaction as the message id (inbox), so
a redelivered message sends nothing twice.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import msgspec

import chronik
from chronik.store.base import TableSpec, TableWrite, UnitOfWork
from chronik.transports import open_transport
from chronik.transports.inbox import StoreInbox
from chronik.transports.message import Delivery

EMAILS = TableSpec(
    "welcome_emails",
    (("message_id", "TEXT"), ("customer_id", "TEXT"), ("email", "TEXT")),
    ("message_id",),
)


async def main(transport_url: str, store_url: str) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with chronik.open_store(store_url) as store, open_transport(transport_url) as transport:
        inbox = StoreInbox(store, "notifications")

        async def welcome(delivery: Delivery, unit: UnitOfWork) -> None:
            body = msgspec.json.decode(delivery.message.body)
            row = {
                "message_id": delivery.id,
                "customer_id": body["customer_id"],
                "email": body["email"],
            }
            unit.write_tables(
                [
                    TableWrite("ensure", EMAILS.name, spec=EMAILS),
                    TableWrite.upsert(EMAILS.name, row, ("message_id",)),
                ]
            )
            print(f"welcome email to {body['email']} (customer {body['customer_id']})", flush=True)

        await transport.subscribe("customer.registered", "notifications", inbox.handler(welcome))
        print("notifications listening", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", required=True)
    parser.add_argument("--store", default="sqlite:///data/notifications.db")
    args = parser.parse_args()
    asyncio.run(main(args.transport, args.store))
