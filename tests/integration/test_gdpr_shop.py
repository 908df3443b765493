"""Crypto-shredding end to end on SQLite: canaries, a read model, an export, forget, verify."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgspec
import pytest

import chronik
from chronik.lifecycle.export import export_events
from chronik.lifecycle.forget import compact_sqlite, forget_subject
from chronik.lifecycle.importer import import_events
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.lifecycle.verify import verify_subject
from chronik.personal import FORGOTTEN, KeyRing
from chronik.projections import Projection, ProjectionRunner, ReadModel, Table, query
from chronik.projections.admin import ProjectionAdmin

ADA, BO = "canary-ada-5e1f@example.test", "canary-bo-77c2@example.test"
ADA_NAME, BO_NAME = "Ada Canarywoman", "Bo Canaryman"


def _registry() -> chronik.EventRegistry:
    """A shop registry whose customer.registered carries two personal fields."""
    registry = chronik.EventRegistry()

    @registry.event("customer.registered", personal={"email": "customer_id", "name": "customer_id"})
    class CustomerRegistered(msgspec.Struct):
        customer_id: str
        email: str
        name: str | None = None
        tier: str = "basic"

    return registry


def _customers(registry: chronik.EventRegistry) -> Projection:
    """A read model of customers with their opened email and name."""
    customers = Projection(
        "customers",
        tables=[Table("customers", {"id": str, "email": str, "name": str}, primary_key="id")],
    )

    @customers.on("customer.registered")
    async def registered(event: chronik.RecordedEvent, rm: ReadModel) -> None:
        c = await registry.adecode(event)
        rm.upsert("customers", id=c.customer_id, email=c.email, name=str(c.name))

    return customers


def _raw(path: Path) -> bytes:
    """The database file's and its WAL's bytes."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def _wait_rows(store: chronik.EventStore, expect: dict[str, str]) -> list[dict[str, str]]:
    """The customers rows once their emails are ``expect`` (id -> email), within 10 s."""
    rows: list[dict[str, str]] = []
    for _ in range(200):
        try:
            rows = await query(store, "customers", "customers", order_by=("id",))
        except chronik.ReadModelError:  # a rebuild's new table does not exist yet
            rows = []
        if {r["id"]: r["email"] for r in rows} == expect:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"read model never reached {expect}: {rows}")


async def test_forget_leaves_no_plaintext_anywhere(tmp_path: Path) -> None:
    """Events, the export and an import of it only ever hold ciphertext (the raw file has no
    canary before any read model exists); after forget, a rebuild shows the placeholder, the
    other subject still decrypts, and verify finds 0 canaries in tables, the raw SQLite file
    and the export."""
    db = tmp_path / "shop.db"
    registry = _registry()
    cls = registry.class_for("customer.registered")
    async with chronik.open_store(f"sqlite:///{db}") as store:
        keys = KeyRing(StoreKeyStore(store))
        registry.use_keys(keys)
        for cid, email, name in (("c-ada", ADA, ADA_NAME), ("c-bo", BO, BO_NAME)):
            event = cls(cid, email, name)
            await registry.load_keys([event])
            await store.append(chronik.StreamId("customer", cid), [registry.to_event_data(event)])
        ada_key = await keys.store.key_for("c-ada")
        assert ada_key is not None
        sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
        before = _raw(db)
        assert ADA.encode() not in before and BO.encode() not in before
        assert ADA_NAME.encode() not in before and b'"$enc":"v1"' in before

        export = tmp_path / "shop.jsonl"
        with export.open("wb") as out:
            await export_events(store, out)
        assert ADA.encode() not in export.read_bytes() and b"$enc" in export.read_bytes()
        async with chronik.open_store("memory://") as copy:  # an import keeps the envelopes
            with export.open("rb") as lines:
                await import_events(copy, lines)
            imported = [e.payload async for e in copy.read_all()]
        assert imported == [e.payload async for e in store.read_all()]

        async with ProjectionRunner(store, [_customers(registry)]):
            rows = await _wait_rows(store, {"c-ada": ADA, "c-bo": BO})
            assert rows[0]["name"] == ADA_NAME
            report = await forget_subject(store, keys, "c-ada", by="dpo@shop", reason="art. 17")
            assert report.key_deleted
            await ProjectionAdmin(store).request("customers", "rebuild")
            rows = await _wait_rows(store, {"c-ada": FORGOTTEN, "c-bo": BO})
            assert rows[0]["name"] == "None" and rows[1]["name"] == BO_NAME

        (stored,) = [e async for e in store.read_stream(chronik.StreamId("customer", "c-ada"))]
        assert registry.decode(stored).email == FORGOTTEN and registry.decode(stored).name is None
        audit = [e async for e in store.read_all(types=["chronik.subject_forgotten"])]
        assert [e.json()["by"] for e in audit] == ["dpo@shop"]

    compact_sqlite(db)
    async with chronik.open_store(f"sqlite:///{db}") as store:
        found = await verify_subject(
            store,
            "c-ada",
            canaries=[ADA, ADA_NAME],
            keys=StoreKeyStore(store),
            tables=["customers"],
            sqlite_file=db,
            files=[export],
        )
        assert found.hits == [] and found.envelopes == 2, found
        assert any(s.startswith("sqlite table customers") for s in found.searched)
        other = await verify_subject(store, "c-bo", canaries=[BO], sqlite_file=db)
        where = sorted(h.where for h in other.hits)  # Bo's opened row in the read model
        assert where == [f"file {db}", "sqlite table customers__g2"]
    assert ada_key not in _raw(db)


async def test_verify_reports_plaintext_and_live_keys(tmp_path: Path) -> None:
    """verify finds a canary stored in clear (an event appended without a key ring) and the
    envelopes of a subject whose key still exists, naming where."""
    db = tmp_path / "leaky.db"
    registry = _registry()
    async with chronik.open_store(f"sqlite:///{db}") as store:
        await store.append(
            chronik.StreamId("customer", "c-1"),
            [chronik.EventData("customer.registered", {"customer_id": "c-1", "email": ADA})],
        )
        keys = KeyRing(StoreKeyStore(store))
        registry.use_keys(keys)
        event = registry.class_for("customer.registered")("c-2", BO)
        await registry.load_keys([event])
        await store.append(chronik.StreamId("customer", "c-2"), [registry.to_event_data(event)])
        leak = await verify_subject(store, "c-1", canaries=[ADA], sqlite_file=db)
        assert {h.where.split(" ")[0] for h in leak.hits} >= {"event", "file", "sqlite"}
        live = await verify_subject(store, "c-2", keys=keys.store)
        assert len(live.hits) == 1 and "key exists" in live.hits[0].what


@pytest.mark.parametrize("bad", ["", "abc"])
async def test_verify_refuses_short_canaries(tmp_path: Path, bad: str) -> None:
    """A canary under 4 characters would match everywhere: ConfigurationError."""
    async with chronik.open_store("memory://") as store:
        with pytest.raises(chronik.ConfigurationError):
            await verify_subject(store, "c-1", canaries=[bad])
