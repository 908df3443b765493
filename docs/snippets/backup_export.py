import asyncio

import chronik
from chronik.lifecycle import backup_sqlite, export_events, import_events, move_store


async def main() -> None:
    async with chronik.open_store("sqlite:///shop.db") as shop:
        await shop.append(
            chronik.StreamId("customer", "c1"),
            [chronik.EventData("customer.registered", {"name": "Ada"}, {"correlation_id": "r1"})],
        )
        await shop.append_tagged([chronik.EventData("seat.taken", {}, tags=["course:c1"])])

        # An online backup (SQLite only): safe while a server keeps writing.
        done = await backup_sqlite("sqlite:///shop.db", "shop-backup.db", overwrite=True)
        print("backup holds events up to", done.head)

        # Export to JSON lines, import elsewhere: ids, order, metadata and tags kept.
        with open("shop.jsonl", "wb") as out:  # noqa: ASYNC230 - a local file, as the CLI does
            exported = await export_events(shop, out)
        print("exported", exported.events, "events")
        async with chronik.open_store("sqlite:///copy.db") as copy:
            for _ in range(2):  # the second run appends nothing: it is idempotent
                with open("shop.jsonl", "rb") as lines:  # noqa: ASYNC230
                    report = await import_events(copy, lines)
                print("appended", report.appended, "skipped", report.skipped)

        # Or move straight from one store into another, then check the target.
        async with chronik.open_store("memory://") as target:
            moved = await move_store(shop, target)
            print("moved", moved.imported.appended, "verified:", moved.verified)


asyncio.run(main())
