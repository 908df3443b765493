"""``chronik gdpr forget`` and ``verify`` on a SQLite store, through the real command."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
from typer.testing import CliRunner

import chronik
from chronik.cli import _build
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.personal import KeyRing

runner = CliRunner()
EMAIL = "canary-cli-31aa@example.test"


class Registered(msgspec.Struct):
    """A customer registration with a personal email."""

    customer_id: str
    email: str


def _fill(url: str, plaintext_copy: bool) -> None:
    """One sealed registration of c-1 (and, if asked, a clear copy of its email in an event)."""

    async def fill() -> None:
        registry = chronik.EventRegistry()
        registry.register(Registered, "customer.registered", personal={"email": "customer_id"})
        async with chronik.open_store(url) as store:
            registry.use_keys(KeyRing(StoreKeyStore(store)))
            event = Registered("c-1", EMAIL)
            await registry.load_keys([event])
            await store.append(chronik.StreamId("customer", "c-1"), [registry.to_event_data(event)])
            if plaintext_copy:
                note = chronik.EventData("note.added", {"text": f"mail {EMAIL}"})
                await store.append(chronik.StreamId("note", "n-1"), [note])

    asyncio.run(fill())


def invoke(*args: str) -> tuple[int, str, str]:
    """Run the chronik command; (exit code, stdout, stderr)."""
    result = runner.invoke(_build(), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_forget_then_verify_is_clean_and_audited(tmp_path: Path) -> None:
    """Before forget verify reports the live key (exit 1); after ``forget --yes --compact``
    it finds 0 hits for the canary in events, tables and the raw file; the audit names who."""
    url = f"sqlite:///{tmp_path}/shop.db"
    _fill(url, plaintext_copy=False)
    code, out, err = invoke("gdpr", "verify", "c-1", "--store", url, "--canary", EMAIL)
    assert code == 1 and "key exists" in out and "1 hit(s)" in err
    code, out, _ = invoke(
        "gdpr", "forget", "c-1", "--store", url, "--yes", "--by", "dpo", "--compact"
    )
    assert code == 0 and "key deleted" in out and "compacted" in out
    code, out, _ = invoke("gdpr", "verify", "c-1", "--store", url, "--canary", EMAIL)
    assert code == 0 and "0 hits" in out and "1 unreadable envelope" in out

    async def audit() -> list[dict[str, object]]:
        async with chronik.open_store(url) as store:
            return [e.json() async for e in store.read_all(types=["chronik.subject_forgotten"])]

    assert [(a["by"], a["key_deleted"]) for a in asyncio.run(audit())] == [("dpo", True)]


def test_verify_names_a_clear_copy_and_forget_asks_first(tmp_path: Path) -> None:
    """A canary kept in clear elsewhere is a hit naming the event; forget without --yes asks
    and a 'no' changes nothing."""
    url = f"sqlite:///{tmp_path}/leak.db"
    _fill(url, plaintext_copy=True)
    code, _, _ = invoke("gdpr", "forget", "c-1", "--store", url, "--yes")
    assert code == 0
    code, out, _ = invoke("gdpr", "verify", "c-1", "--store", url, "--canary", EMAIL)
    assert code == 1 and "note.added" in out
    result = runner.invoke(_build(), ["gdpr", "forget", "c-9", "--store", url], input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
