"""Personal data reach into the archive: verify scans the archive's segments, a redaction of an
archived event rewrites its segment, and after forget + redact verify finds 0 hits over the
events, the archive (decompressed) and the raw blob files of a directory archive."""

from __future__ import annotations

from pathlib import Path

import msgspec

import chronik
from chronik.archive import Archive
from chronik.archive.urls import open_blobs
from chronik.lifecycle.archiver import archive_log
from chronik.lifecycle.forget import forget_subject
from chronik.lifecycle.redact import redact_event
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.lifecycle.verify import verify_subject
from chronik.messages import REDACTED
from chronik.personal import KeyRing

EMAIL = "canary-archived-91c2@example.test"
NOTE = "canary-note-archived-77d1"
STREAM = chronik.StreamId("customer", "c-a")


class Registered(msgspec.Struct):
    """A registration whose email is personal data of subject ``customer_id``."""

    customer_id: str
    email: str


async def test_forget_and_redact_reach_the_archive(tmp_path: Path) -> None:
    """A sealed email and a plaintext note are archived; verify sees the note in a segment;
    after forget and redaction nothing is found, in the raw blob files either."""
    arc_dir = tmp_path / "arc"
    archive = Archive(open_blobs(str(arc_dir)))
    await archive.open()
    async with chronik.open_store(f"sqlite:///{tmp_path}/g.db") as store:
        keys = KeyRing(StoreKeyStore(store))
        registry = chronik.EventRegistry()
        registry.register(Registered, "customer.registered", personal={"email": "customer_id"})
        registry.use_keys(keys)
        event = Registered("c-a", EMAIL)
        await registry.load_keys([event])
        await store.append(STREAM, [registry.to_event_data(event)])
        note = chronik.EventData("customer.noted", {"note": NOTE})
        await store.append(STREAM, [note])
        for i in range(4):
            await store.append(chronik.StreamId("filler", "f"), [chronik.EventData("t", {"i": i})])
        store.attach_archive(archive)
        await archive_log(store, archive, retain_at_least=2)
        assert await archive.get_event(note.event_id) is not None  # the note is archived

        before = await verify_subject(store, "c-a", canaries=[EMAIL, NOTE], keys=keys.store)
        assert "archive" in before.searched
        assert any(h.where.startswith("archive segment") and NOTE in h.what for h in before.hits)
        assert not any(EMAIL in h.what for h in before.hits)  # sealed: ciphertext everywhere

        await forget_subject(store, keys, "c-a", by="dpo")
        redacted = await redact_event(store, note.event_id, by="dpo", reason="erasure request")
        assert redacted.rewritten
        stored = await store.get_event(note.event_id)
        assert stored is not None and stored.content_type == REDACTED

        blobs = sorted(p for p in arc_dir.rglob("*") if p.is_file())
        after = await verify_subject(
            store, "c-a", canaries=[EMAIL, NOTE], keys=keys.store, files=blobs
        )
        assert after.hits == [] and after.envelopes == 1
        assert await archive.verify() == []
    await archive.close()
