"""``chronik export``, ``import``, ``move`` and ``backup``: a store's events out to JSON lines and
back in, from one store into another, and SQLite's online backup; progress bars on stderr.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from chronik.cli.archive import READ_ARCHIVE_OPTION, through_archive
from chronik.cli.common import STORE_OPTION, fail, run, store_url
from chronik.errors import ChronikError
from chronik.lifecycle import (
    backup_sqlite,
    export_events,
    import_events,
    move_store,
)
from chronik.lifecycle.importer import ImportReport
from chronik.lifecycle.move import verify_move
from chronik.messages import Position
from chronik.store import open_store

__all__ = ["backup", "export", "import_", "move"]

PROGRESS_OPTION: Any = typer.Option(
    None,
    "--progress/--no-progress",
    help="Show a progress bar on stderr [default: when stderr is a terminal].",
)


class Tick(Protocol):
    """Advance a progress display to ``done`` (out of ``of``, once that is known)."""

    def __call__(self, done: int, of: int | None = None) -> None: ...


@contextmanager
def _progress(
    shown: bool | None,
    what: str,
    total: int | None = None,
    *,
    bar: bool = False,
    in_bytes: bool = False,
) -> Iterator[Tick]:
    """A callback that shows ``what`` advancing: a rich bar when stderr is a terminal, plain
    lines at most every second when ``--progress`` asks for one elsewhere, else nothing."""
    tty = sys.stderr.isatty()
    if shown is None:
        shown = tty
    if not shown:
        yield lambda done, of=None: None
        return
    if not tty:
        last = [0.0, -1.0]  # when the last line was printed, the latest count

        def line(done: int, of: int | None = None) -> None:
            now = time.monotonic()
            last[1] = done
            if now - last[0] >= 1.0:
                last[0] = now
                whole = of or total
                print(f"{what}: {done}" + (f" / {whole}" if whole else ""), file=sys.stderr)

        yield line
        if last[1] >= 0:
            print(f"{what}: {last[1]:.0f} done", file=sys.stderr)
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None or bar:
        columns.append(BarColumn())
    count = MofNCompleteColumn() if total or bar else TextColumn("{task.completed}")
    columns += [DownloadColumn() if in_bytes else count,
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=False) as shown_bar:
        task = shown_bar.add_task(what, total=total, rate="")
        started = time.monotonic()

        def tick(done: int, of: int | None = None) -> None:
            spent = time.monotonic() - started
            rate = f"{done / spent:,.0f}/s" if spent > 0 and total is None else ""
            if of is not None:
                shown_bar.update(task, total=of)
            shown_bar.update(task, completed=done, rate=rate)

        yield tick


def _position(text: str | None, option: str) -> Position | None:
    return None if text is None else Position.parse(text, option)


def export(
    store: str | None = STORE_OPTION,
    after: str | None = typer.Option(None, help="Only events after this position."),
    output: str | None = typer.Option(
        None, "--output", "-o", help="Write to this file instead of stdout."
    ),
    progress: bool | None = PROGRESS_OPTION,
    tenant: str | None = typer.Option(
        None, help="Only this tenant's events and streams ('' for the default tenant)."
    ),
    archive: str | None = READ_ARCHIVE_OPTION,
) -> None:
    """Write the store's events as JSON lines (stdout), in global order, up to its head
    (with ``--archive``: the archived ones too, the whole log)."""

    async def go(out: IO[bytes]) -> str:
        start = _position(after, "--after")
        async with (
            open_store(store_url(store), create=False) as opened,
            through_archive(opened, archive) as s,
        ):
            with _progress(progress, "exporting events") as tick:
                done = await export_events(s, out, after=start, progress=tick, tenant=tenant)
        return f"exported {done.events} events up to position {done.head or '(empty store)'}"

    if output is None:
        print(run(lambda: go(sys.stdout.buffer)), file=sys.stderr)
        return
    try:
        opened = open(output, "wb")  # noqa: SIM115 - closed below
    except OSError as err:
        raise fail(err) from None
    with opened:
        print(run(lambda: go(opened)), file=sys.stderr)


def import_(
    source: str = typer.Argument("-", help="The export file ('-' or nothing: stdin)."),
    store: str | None = STORE_OPTION,
    progress: bool | None = PROGRESS_OPTION,
    as_json: bool = typer.Option(False, "--json", help="The report as one JSON line."),
) -> None:
    """Append the events of an export to the store; running it again appends nothing twice."""

    async def go(opened: IO[bytes]) -> ImportReport:
        info = os.fstat(opened.fileno())
        size = info.st_size if stat.S_ISREG(info.st_mode) else None
        read = [0]

        def counted() -> Iterator[bytes]:
            for line in opened:
                read[0] += len(line)
                yield line

        async with open_store(store_url(store)) as s:
            with _progress(progress, "importing", size, in_bytes=size is not None) as t:
                return await import_events(
                    s, counted(), progress=lambda n: t(read[0] if size else n)
                )

    if source == "-":
        report = run(lambda: go(sys.stdin.buffer))
    else:
        try:
            opened = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as err:
            raise fail(err) from None
        with opened:
            report = run(lambda: go(opened))
    if as_json:
        print(json.dumps(_import_json(report)))
    else:
        print(
            f"imported {report.events} events from {report.source or 'the file'}: "
            f"{report.appended} appended, {report.skipped} already stored (skipped), "
            f"{report.streams} streams begin in the file"
        )
    if not report.complete:
        raise fail(
            ChronikError(
                "the export has no end line: it was cut short. What it held is imported (a "
                "prefix of the source's order); export again and import the new file"
            )
        )


def _import_json(report: ImportReport) -> dict[str, Any]:
    return {
        "appended": report.appended,
        "skipped": report.skipped,
        "events": report.events,
        "streams": report.streams,
        "complete": report.complete,
        "source": report.source,
        "exported_at": report.exported_at,
        "head": report.head,
    }


def move(
    from_: str = typer.Option(..., "--from", help="The store to copy events from."),
    to: str = typer.Option(..., "--to", help="The store to copy events into."),
    after: str | None = typer.Option(None, help="Only events after this source position."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the target after."),
    progress: bool | None = PROGRESS_OPTION,
    as_json: bool = typer.Option(False, "--json", help="The report as one JSON line."),
) -> None:
    """Copy every event of one store into another (ids, order, metadata kept), then check."""

    async def go() -> dict[str, Any]:
        start = _position(after, "--after")
        async with open_store(from_, create=False) as src, open_store(to) as dst:
            with _progress(progress, "moving events") as moved:
                done = await move_store(src, dst, after=start, verify=False, progress=moved)
            if verify:
                with _progress(progress, "verifying") as checked:
                    problem, count, head = await verify_move(
                        src, dst, done.exported, progress=checked
                    )
                done.verified, done.problem = problem is None, problem
                done.target_events, done.target_head = count, head
        return {
            **_import_json(done.imported),
            "exported": done.exported.events,
            "source_head": None if done.exported.head is None else str(done.exported.head),
            "target_head": None if done.target_head is None else str(done.target_head),
            "target_events": done.target_events,
            "verified": done.verified,
            "problem": done.problem,
        }

    report = run(go)
    if as_json:
        print(json.dumps(report))
    else:
        print(
            f"moved {report['exported']} events: {report['appended']} appended, "
            f"{report['skipped']} already in the target (skipped)"
        )
        if report["verified"]:
            print(
                f"verified: the target holds them with the same ids in the same order "
                f"({report['target_events']} events in all; source head "
                f"{report['source_head']}, target head {report['target_head']}: positions "
                "are each store's own, the order is the same)"
            )
    if report["verified"] is False:
        raise fail(ChronikError(f"the target does not match the source: {report['problem']}"))


def backup(
    store: str | None = STORE_OPTION,
    to: str = typer.Option(..., "--to", help="The backup file to write."),
    force: bool = typer.Option(False, "--force", help="Replace the file if it exists."),
    progress: bool | None = PROGRESS_OPTION,
) -> None:
    """Back up a SQLite store while it runs (SQLite's online backup API)."""

    async def go() -> str:
        with _progress(progress, "copying pages", bar=True) as tick:
            done = await backup_sqlite(store_url(store), to, overwrite=force, progress=tick)
        return (
            f"backed up to {done.path}: {done.bytes} bytes, events up to position "
            f"{done.head or '(empty store)'}, in {done.seconds:.1f}s"
        )

    print(run(go))
