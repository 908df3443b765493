"""Full-reach forget and verify: canaries flow through an outbox message, a projection dead
letter, a snapshot and (on PostgreSQL) a transport message in flight; verify finds them before
forget and 0 hits after, on SQLite (raw file included) and PostgreSQL; no log line carries an
opened value."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import msgspec
import pytest

import chronik
from chronik import outbox
from chronik.lifecycle.forget import SCRUBBED, compact_sqlite, forget_subject
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.lifecycle.verify import VerifyReport, verify_subject
from chronik.personal import KeyRing
from chronik.projections import ErrorPolicy, Projection, ProjectionRunner, ReadModel
from chronik.projections.admin import ProjectionAdmin
from chronik.transports import open_transport
from chronik.transports.message import Message

EMAIL = "canary-reach-4b7e@example.test"
NAME = "Reach Canarywoman"
STREAM = chronik.StreamId("customer", "c-r")


class Registered(msgspec.Struct):
    """A registration with two personal fields of subject ``customer_id``."""

    customer_id: str
    email: str
    name: str | None = None


def _registry(store: chronik.EventStore) -> chronik.EventRegistry:
    """A registry sealing Registered's personal fields with the store's key table."""
    registry = chronik.EventRegistry()
    registry.register(
        Registered, "customer.registered", personal={"email": "customer_id", "name": "customer_id"}
    )
    registry.use_keys(KeyRing(StoreKeyStore(store)))
    return registry


def _fragile(registry: chronik.EventRegistry) -> Projection:
    """A projection whose handler opens the event and fails quoting the email (a user's leak
    into the dead letter's error text)."""
    fragile = Projection("mailer", policy=ErrorPolicy(retries=0, backoff=0.0, then="park"))

    @fragile.on("customer.registered")
    async def fail(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        c = await registry.adecode(event)
        raise ValueError(f"mail server refused {c.email}")

    return fragile


async def _plant(store: chronik.EventStore, registry: chronik.EventRegistry) -> None:
    """The sealed event and an outbox message carrying its stored payload (one unit), a dead
    letter of it, and a snapshot taken (say, before a key ring was attached) in clear."""
    event = Registered("c-r", EMAIL, NAME)
    await registry.load_keys([event])
    data = registry.to_event_data(event)
    async with store.transaction() as tx:
        tx.append(STREAM, [data])
        body = msgspec.json.encode({"event_id": data.event_id, "payload": data.payload})
        outbox.record(tx, Message(topic="customers", body=body, id=data.event_id))
    state = msgspec.json.encode({"email": EMAIL, "name": NAME})
    await store.save_snapshot(chronik.Snapshot(STREAM, 0, "customer", 1, state))
    async with ProjectionRunner(store, [_fragile(registry)]):
        await _parked(store, "mailer")


async def _parked(store: chronik.EventStore, name: str) -> None:
    """Wait (10 s at most) until projection ``name`` parked an event."""
    for _ in range(200):
        try:
            if await ProjectionAdmin(store).dead_letters(name):
                return
        except chronik.UnknownProjection:  # not started yet
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never parked an event")


def _where(report: VerifyReport) -> set[str]:
    """The places of the hits, without the SQLite file-level ones."""
    return {h.where.split(" (")[0] for h in report.hits}


async def _forget_and_check(store: chronik.EventStore, db: Path | None) -> None:
    """Forget c-r: snapshot dropped, dead letter scrubbed, envelopes dead; 0 hits."""
    keys = KeyRing(StoreKeyStore(store))
    report = await forget_subject(store, keys, "c-r", by="dpo@reach", reason="art. 17")
    assert report.key_deleted and report.snapshots_dropped == 1
    assert report.dead_letters_scrubbed == 1
    letters = await ProjectionAdmin(store).dead_letters("mailer")
    assert [d.error for d in letters] == [SCRUBBED]
    assert await store.load_snapshot(STREAM) is None
    if db is not None:
        compact_sqlite(db)
    after = await verify_subject(
        store, "c-r", canaries=[EMAIL, NAME], keys=StoreKeyStore(store), sqlite_file=db
    )
    assert after.hits == [], after
    assert "snapshots" in after.searched and "table outbox_messages" in after.searched
    assert "table chronik_dead_letters" in after.searched and after.envelopes == 2


async def test_reach_on_sqlite(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite: hits in the outbox (an envelope that opens), the dead letter, the snapshot and
    the raw file before forget; 0 after (the file compacted); no log line holds a value."""
    caplog.set_level(logging.DEBUG, logger="chronik")
    db = tmp_path / "reach.db"
    async with chronik.open_store(f"sqlite:///{db}") as store:
        registry = _registry(store)
        await _plant(store, registry)
        before = await verify_subject(
            store, "c-r", canaries=[EMAIL, NAME], keys=StoreKeyStore(store), sqlite_file=db
        )
        where = _where(before)
        assert {
            "table outbox_messages",
            "table chronik_dead_letters",
            "snapshot customer/c-r",
            "event",
        } <= {w if not w.startswith("event ") else "event" for w in where}, before.hits
        assert f"file {db}" in where or f"file {db}-wal" in where
        await _forget_and_check(store, db)
    leaked = [r.getMessage() for r in caplog.records if EMAIL in r.getMessage()]
    assert all("mail server refused" in m for m in leaked), leaked  # the handler's own text


async def test_reach_on_postgres(postgres_url: str) -> None:
    """PostgreSQL: the same, plus a message in flight on the PostgreSQL transport (its table in
    the store's schema) whose body carries the sealed payload."""
    async with chronik.open_store(postgres_url) as store:
        registry = _registry(store)
        await _plant(store, registry)
        (event,) = [e async for e in store.read_stream(STREAM)]
        async with open_transport(postgres_url) as transport:
            await transport.send(Message(topic="mail-queue", body=event.payload))
        before = await verify_subject(
            store, "c-r", canaries=[EMAIL, NAME], keys=StoreKeyStore(store)
        )
        assert "table transport_messages" in _where(before), before.hits
        assert "snapshot customer/c-r" in _where(before)
        await _forget_and_check(store, None)


async def test_chronik_logs_no_opened_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A projection that opens personal events and fails without quoting them (parks after a
    retry), a forget (which logs) and a verify: no record logged carries an opened value."""
    caplog.set_level(logging.DEBUG)
    async with chronik.open_store(f"sqlite:///{tmp_path}/logs.db") as store:
        registry = _registry(store)
        quiet = Projection("quiet", policy=ErrorPolicy(retries=1, backoff=0.0, then="park"))

        @quiet.on("customer.registered")
        async def fail(event: chronik.RecordedEvent, rm: ReadModel) -> None:
            await registry.adecode(event)
            raise RuntimeError("downstream refused the registration")

        event = Registered("c-r", EMAIL, NAME)
        await registry.load_keys([event])
        await store.append(STREAM, [registry.to_event_data(event)])
        async with ProjectionRunner(store, [quiet]):
            await _parked(store, "quiet")
        keys = KeyRing(StoreKeyStore(store))
        await forget_subject(store, keys, "c-r", by="dpo", reason="erasure")
        await verify_subject(store, "c-r", canaries=[EMAIL, NAME], keys=StoreKeyStore(store))
    assert any(r.getMessage().startswith("forgot subject c-r") for r in caplog.records)
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert EMAIL not in text and NAME not in text, record
