"""``chronik archive run|status|verify``: the archiver from the command line (seal the old part
of the log into an archive and drop it from the hot store, ``chronik.lifecycle.archiver``), where
the store and its archive stand, and a checksum check of every archived segment."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import typer

from chronik.archive.archive import Archive
from chronik.archive.urls import open_blobs
from chronik.cli.common import STORE_OPTION, run, store_url
from chronik.store import open_store
from chronik.store.base import EventStore

__all__ = ["READ_ARCHIVE_OPTION", "archive", "through_archive"]

T = TypeVar("T")

archive = typer.Typer(
    help="The archive: seal old events, drop them from the hot store.", no_args_is_help=True
)

ARCHIVE_OPTION = typer.Option(
    ..., "--archive", help="The archive: a directory path, file:///path, memory:// or s3://..."
)


@asynccontextmanager
async def _opened(store: str | None, url: str) -> AsyncIterator[tuple[EventStore, Archive]]:
    arc = Archive(open_blobs(url))
    await arc.open()
    try:
        async with open_store(store_url(store), create=False) as s:
            s.attach_archive(arc)
            yield s, arc
    finally:
        await arc.close()


#: ``--archive`` of the commands that read through an archive when given one
READ_ARCHIVE_OPTION = typer.Option(
    None,
    "--archive",
    help="Also reach the store's archive: a directory path, file:///path or s3://...",
)


@asynccontextmanager
async def through_archive(store: EventStore, url: str | None) -> AsyncIterator[EventStore]:
    """``store`` with the archive at ``url`` attached (reads, redaction and verification
    reach archived events) while the block runs; ``store`` as it is when ``url`` is None."""
    if url is None:
        yield store
        return
    arc = Archive(open_blobs(url))
    try:
        await arc.open()
        store.attach_archive(arc)
        yield store
    finally:
        store.attach_archive(None)
        await arc.close()


def _go(store: str | None, url: str, work: Callable[[EventStore, Archive], Awaitable[T]]) -> T:
    async def go() -> T:
        async with _opened(store, url) as (s, arc):
            return await work(s, arc)

    return run(go)


@archive.command("run")
def archive_run(
    store: str | None = STORE_OPTION,
    url: str = ARCHIVE_OPTION,
    retain_at_least: int = typer.Option(100_000, help="Events that stay in the hot store."),
    max_age: float | None = typer.Option(None, help="Seconds: younger events stay hot too."),
    segment_events: int = typer.Option(50_000, help="Events per sealed segment."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Change nothing: report what would go."),
    progress: bool = typer.Option(False, "--progress", help="Progress lines on stderr."),
    as_json: bool = typer.Option(False, "--json", help="The report as JSON."),
) -> None:
    """Seal the hot store's old events into the archive and drop them, holding the store's
    archiver lease (exit 1 while a server's archiver holds it)."""
    from chronik.lifecycle.archiver import LEASE, ArchiveProgress, Archiver

    async def work(s: EventStore, arc: Archive) -> Any:
        runner = Archiver(
            s, arc, retain_at_least=retain_at_least, max_age=max_age, segment_events=segment_events
        )
        if progress:

            async def show(p: ArchiveProgress) -> None:
                print(
                    f"{p.segments} segments, {p.events} events archived, {p.dropped} dropped, "
                    f"horizon {p.horizon}",
                    file=sys.stderr,
                    flush=True,
                )

            runner.on_progress = show
        try:
            return await runner.run_once(dry_run=dry_run)
        finally:
            await s.release_lease(LEASE, runner.owner)

    report = _go(store, url, work)
    if report is None:
        print("error: another process holds the archiver lease", file=sys.stderr)
        raise typer.Exit(1)
    if as_json:
        print(msgspec.json.encode(report).decode())
        return
    verb = "would archive" if report.dry_run else "archived"
    print(
        f"{verb} {report.events} events in {report.segments} segments, dropped {report.dropped}"
        f" from the hot store; archive horizon {report.horizon}"
    )


@archive.command("status")
def archive_status(
    store: str | None = STORE_OPTION,
    url: str = ARCHIVE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="As JSON."),
) -> None:
    """The archive's horizon and segments, the hot store's floor and head."""

    async def work(s: EventStore, arc: Archive) -> dict[str, Any]:
        floor, head = await s.archive_floor(), await s.head()
        return {
            "horizon": None if arc.horizon is None else str(arc.horizon),
            "segments": len(arc.segments),
            "archived_events": sum(seg.events for seg in arc.segments),
            "archived_bytes": sum(seg.bytes for seg in arc.segments),
            "hot_floor": None if floor is None else str(floor),
            "head": None if head is None else str(head),
        }

    status = _go(store, url, work)
    if as_json:
        print(msgspec.json.encode(status).decode())
        return
    for key, value in status.items():
        print(f"{key}: {value}")


@archive.command("verify")
def archive_verify(store: str | None = STORE_OPTION, url: str = ARCHIVE_OPTION) -> None:
    """Check every archived segment against its checksums (exit 1 on a problem)."""

    async def work(s: EventStore, arc: Archive) -> list[str]:
        return await arc.verify()

    problems = _go(store, url, work)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        raise typer.Exit(1)
    print("archive verified: every segment matches its checksums")
