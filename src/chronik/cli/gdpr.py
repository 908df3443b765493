"""``chronik gdpr``: forget a personal-data subject (crypto-shredding) and verify it is gone."""

from __future__ import annotations

import getpass
from pathlib import Path

import typer

from chronik.cli.archive import READ_ARCHIVE_OPTION, through_archive
from chronik.cli.common import STORE_OPTION, console, fail, print_table, run, store_url, table
from chronik.lifecycle.forget import compact_sqlite, forget_subject, sqlite_path
from chronik.lifecycle.redact import redact_event
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.lifecycle.verify import VerifyReport, verify_subject
from chronik.personal.keyring import KeyRing
from chronik.store import open_store

__all__ = ["events_redact", "gdpr"]

gdpr = typer.Typer(help="Personal data: forget a subject, verify nothing of it is readable.")


async def _forget(
    url: str, subject: str, by: str, reason: str, compact: bool, archive: str | None
) -> str:
    async with open_store(url) as opened, through_archive(opened, archive) as store:
        report = await forget_subject(
            store, KeyRing(StoreKeyStore(store)), subject, by=by, reason=reason
        )
    done = "key deleted" if report.key_deleted else "no key was left"
    done += (
        f", {report.snapshots_dropped} snapshot(s) dropped, "
        f"{report.dead_letters_scrubbed} dead letter(s) scrubbed"
    )
    path = sqlite_path(url)
    if compact and path is not None:
        compact_sqlite(path)
        done += f"; {path} compacted"
    return f"forgot {subject}: {done} (audit event {report.audit_event_id}, by {by})"


@gdpr.command("forget")
def forget(
    subject: str = typer.Argument(..., help="The subject (the value of its subject field)."),
    store: str | None = STORE_OPTION,
    by: str = typer.Option("", help="Who asks (default: cli:<user>); recorded in the audit."),
    reason: str = typer.Option("", help="Why (e.g. the request's reference); audited."),
    compact: bool = typer.Option(
        False, help="SQLite: then rewrite the file (checkpoint, VACUUM) so no old page remains."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    archive: str | None = READ_ARCHIVE_OPTION,
) -> None:
    """Delete SUBJECT's key: its personal fields become unreadable everywhere, for good."""
    if not yes and not typer.confirm(f"forget {subject} for good?"):
        raise typer.Abort()
    who = by or f"cli:{getpass.getuser()}"
    url = store_url(store)
    console().print(
        run(lambda: _forget(url, subject, who, reason, compact, archive)), highlight=False
    )


async def _verify(
    url: str,
    subject: str,
    canaries: list[str],
    tables: list[str],
    files: list[Path],
    archive: str | None,
) -> VerifyReport:
    async with open_store(url) as opened, through_archive(opened, archive) as store:
        return await verify_subject(
            store,
            subject,
            canaries=canaries,
            keys=StoreKeyStore(store),
            tables=tables,
            sqlite_file=sqlite_path(url),
            files=files,
        )


@gdpr.command("verify")
def verify(
    subject: str = typer.Argument(..., help="The subject to look for."),
    store: str | None = STORE_OPTION,
    canary: list[str] = typer.Option([], help="A plaintext value the subject had (repeat)."),
    table_: list[str] = typer.Option([], "--table", help="A read-model table to scan too."),
    scan: list[Path] = typer.Option([], help="An export or archive file to scan (repeat)."),
    archive: str | None = READ_ARCHIVE_OPTION,
) -> None:
    """Search events, tables, the SQLite file and the given files for SUBJECT's data; exit 1
    on any hit."""
    url = store_url(store)
    report = run(lambda: _verify(url, subject, canary, table_, scan, archive))
    out = console()
    if report.hits:
        shown = table("where", "what")
        for hit in report.hits:
            shown.add_row(hit.where, hit.what)
        print_table(out, shown)
        raise fail(RuntimeError(f"{len(report.hits)} hit(s) for {subject}"))
    out.print(
        f"{subject}: 0 hits in {len(report.searched)} places "
        f"({report.envelopes} unreadable envelope(s) in events)",
        highlight=False,
    )


async def _redact(
    url: str, event_id: str, by: str, reason: str, compact: bool, archive: str | None
) -> str:
    async with open_store(url, create=False) as opened, through_archive(opened, archive) as store:
        report = await redact_event(store, event_id, by=by, reason=reason)
    done = "redacted" if report.rewritten else "was already redacted"
    path = sqlite_path(url)
    if compact and path is not None:
        compact_sqlite(path)
        done += f"; {path} compacted"
    return (
        f"{report.type} {event_id} ({report.stream}@{report.sequence}) {done} "
        f"(audit event {report.audit_event_id}, by {report.by})"
    )


def events_redact(
    event_id: str = typer.Argument(..., help="The event to redact."),
    reason: str = typer.Option(..., help="Why (recorded in the audit event and the marker)."),
    store: str | None = STORE_OPTION,
    by: str = typer.Option("", help="Who asks (default: cli:<user>); recorded in the audit."),
    compact: bool = typer.Option(
        True, help="SQLite: then rewrite the file (checkpoint, VACUUM) so the old bytes go."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    archive: str | None = READ_ARCHIVE_OPTION,
) -> None:
    """Replace EVENT_ID's payload by the redaction marker (type, ids, position kept), drop
    its stream's snapshot and audit it (who, why, a hash of the old payload)."""
    if not yes and not typer.confirm(f"redact event {event_id} for good?"):
        raise typer.Abort()
    who = by or f"cli:{getpass.getuser()}"
    url = store_url(store)
    console().print(
        run(lambda: _redact(url, event_id, who, reason, compact, archive)), highlight=False
    )
