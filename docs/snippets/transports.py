import asyncio

from chronik.transports import Delivery, FailurePolicy, MemoryInbox, Message, open_transport


async def main() -> None:
    # The same code runs on postgresql://..., nats://... and amqp://...
    async with open_transport("memory://") as transport:
        inbox = MemoryInbox("billing")  # or StoreInbox(store, ...) / PostgresInbox(...)
        billed: list[str] = []
        done = asyncio.Event()

        async def bill(delivery: Delivery, _unit: None) -> None:
            billed.append(delivery.body.decode())
            done.set()

        # publish/subscribe: every group gets each message; consumers of a group compete
        await transport.subscribe(
            "orders.placed",
            "billing",
            inbox.handler(bill),
            policy=FailurePolicy(retries=5, backoff=0.1, then="dead_letter"),
        )
        order = Message(
            topic="orders.placed",
            body=b"order-17",
            key="customer-4",  # same key: in order
            headers={"correlation-id": "checkout-9"},
        )
        await transport.publish(order)
        await transport.publish(order)  # a retry with the same id takes effect once

        # send/listen: one queue, competing listeners
        sent = asyncio.Event()

        async def mail(delivery: Delivery) -> None:
            sent.set()

        await transport.listen("mail.outgoing", mail)
        await transport.send(Message(topic="mail.outgoing", body=b"welcome"))
        await asyncio.wait_for(asyncio.gather(sent.wait(), done.wait()), 5)
        print("billed", billed, "and mail sent")


asyncio.run(main())
