import asyncio
from pathlib import Path

import msgspec
import yaml

import chronik
from chronik.personal.at_rest import AtRestKeys
from chronik.server.config import Config

registry = chronik.EventRegistry()


@registry.event("note.added")
class NoteAdded(msgspec.Struct):
    text: str


# the codec: section of chronik.yaml (chronik serve applies it to the app's registry)
CHRONIK_YAML = """
codec:
  compress: zlib              # or none (zlib is the standard library's)
  encrypt:
    key_file: at-rest.keys    # "<key id> <base64 of 32 bytes>" per line; the first one seals
"""


async def main() -> None:
    config = msgspec.convert(yaml.safe_load(CHRONIK_YAML), Config)
    assert config.codec is not None
    registry.at_rest = config.codec.build()  # what chronik serve does with the section

    stream = chronik.StreamId("note", "n-1")
    async with chronik.open_store("sqlite:///notes.db") as store:
        await store.append(stream, [registry.to_event_data(NoteAdded("a confidential note"))])
        (event,) = [e async for e in store.read_stream(stream)]
        print("stored as:", event.content_type, len(event.payload), "bytes")
        print("decoded:", registry.decode(event).text)


# rotate by putting a new key first and keeping the old ones for the rows they sealed
Path("at-rest.keys").write_text(AtRestKeys.new_line("2026-01") + "\n")
asyncio.run(main())
raw = b"".join(p.read_bytes() for p in Path().glob("notes.db*"))
print("plaintext in the database files:", b"confidential" in raw)  # False
