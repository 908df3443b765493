import asyncio
from pathlib import Path

import msgspec

import chronik
from chronik.lifecycle.forget import compact_sqlite
from chronik.lifecycle.redact import redact_event
from chronik.lifecycle.verify import verify_subject
from chronik.personal.redacted import Redacted

registry = chronik.EventRegistry()


@registry.event("note.added")
class NoteAdded(msgspec.Struct):
    text: str


async def main() -> None:
    stream = chronik.StreamId("note", "n-1")
    async with chronik.open_store("sqlite:///notes.db") as store:
        await store.append(stream, [registry.to_event_data(NoteAdded("call ada@example.com"))])
        (event,) = [e async for e in store.read_stream(stream)]

        report = await redact_event(
            store, event.event_id, by="dpo@example.com", reason="REQ-42: pasted an email"
        )
        print("audit event:", report.audit_event_id, "old payload sha256:", report.payload_sha256)

        (redacted,) = [e async for e in store.read_stream(stream)]
        decoded = registry.decode(redacted)  # never an error, never the old value
        assert isinstance(decoded, Redacted)
        print("decoded:", decoded.type, decoded.sequence, decoded.marker["reason"])

    compact_sqlite(Path("notes.db"))  # the old bytes leave the file (free pages, WAL)
    async with chronik.open_store("sqlite:///notes.db") as store:
        found = await verify_subject(
            store, "n-1", canaries=["ada@example.com"], sqlite_file=Path("notes.db")
        )
        print("hits after redaction:", len(found.hits))


asyncio.run(main())
