import asyncio

from library import Book, registry

import chronik
from chronik.sdk import serve_business_logic
from chronik.server.remote import RemoteModel


async def main() -> None:
    # The business logic's process: python -m yourapp.book_service (port 0: any free port)
    service, port = await serve_business_logic(Book, registry, "127.0.0.1:0")
    try:
        # The server's side: what `business_logic: [{domain: book, address: ...}]` configures
        app = chronik.Chronik(store="memory://")
        app.add_model(RemoteModel("book", f"127.0.0.1:{port}", timeout=5))
        async with app:
            result = await app.dispatch(
                chronik.Command(
                    domain="book",
                    aggregate_id="dune",
                    type="Lend",
                    payload={"loan_id": "loan-1", "member": "ada"},
                )
            )
            print("decided remotely:", result.events[0].type, result.events[0].json())
            try:
                await app.dispatch(
                    chronik.Command(
                        domain="book",
                        aggregate_id="dune",
                        type="Lend",
                        payload={"loan_id": "loan-2", "member": "bo"},
                    )
                )
            except chronik.CommandRejected as err:
                print("rejected remotely:", err.reason)
    finally:
        await service.stop(None)


asyncio.run(main())
