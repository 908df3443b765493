"""``chronik streams delete``, ``chronik streams compact``, ``chronik streams retention
set|show`` and ``chronik scavenge``: deletes, compaction, retention rules and the scavenger from
the command line (``chronik.store.deletion``, ``chronik.lifecycle.compaction``,
``chronik.store.retention``, ``chronik.lifecycle.scavenger``)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from chronik.cli.archive import READ_ARCHIVE_OPTION, through_archive
from chronik.cli.common import (
    STORE_OPTION,
    console,
    print_json_lines,
    print_table,
    run,
    store_url,
    table,
)
from chronik.messages import ANY, NO_STREAM, STREAM_EXISTS, Expected, StreamId
from chronik.store import open_store
from chronik.store.retention import Retention, check_retention

__all__ = ["retention", "scavenge_command", "streams_compact", "streams_delete"]

retention = typer.Typer(help="Retention rules of a stream.", no_args_is_help=True)


def _expected(text: str) -> Expected:
    named = {"any": ANY, "no_stream": NO_STREAM, "stream_exists": STREAM_EXISTS}
    if text in named:
        return named[text]
    try:
        return int(text)
    except ValueError:
        raise typer.BadParameter(
            "expected any, no_stream, stream_exists or a sequence", param_hint="--expected"
        ) from None


def streams_delete(
    stream: str = typer.Argument(..., help="DOMAIN/AGGREGATE_ID"),
    store: str | None = STORE_OPTION,
    hard: bool = typer.Option(False, "--hard", help="Tombstone it: the id can never be reused."),
    expected: str = typer.Option("any", help="any, no_stream, stream_exists or a sequence."),
) -> None:
    """Delete a stream: soft (it reads empty and may start again) or --hard."""
    want = _expected(expected)

    async def go() -> Any:
        async with open_store(store_url(store), create=False) as s:
            return await s.delete_stream(StreamId.parse(stream), want, hard=hard)

    done = run(go)
    kind = "hard-deleted (tombstoned)" if hard else "soft-deleted"
    print(f"{stream} {kind}: deletion event at sequence {done.first_sequence}, {done.position}")


def streams_compact(
    stream: str = typer.Argument(..., help="DOMAIN/AGGREGATE_ID or TENANT:DOMAIN/AGGREGATE_ID"),
    upto: int = typer.Option(..., "--upto", help="The last sequence the summary stands for."),
    config: str = typer.Option(
        ..., "--config", help="A chronik.yaml: the app whose model sums the events up."
    ),
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="The result as JSON."),
) -> None:
    """Compact a stream: its model's summary event replaces the events 0..--upto (hidden at
    once, removed by the scavenger); a retry answers the same summary."""
    from chronik.lifecycle.compaction import compact_aggregate
    from chronik.server.config import build_app, load_config

    if upto < 0:
        raise typer.BadParameter("a sequence >= 0", param_hint="--upto")

    async def go() -> Any:
        settings = load_config(config)
        target = StreamId.parse(stream)
        app = build_app(settings, store or settings.store or store_url(None))
        model = app.bus.model(target.domain)
        async with app.store:
            return await compact_aggregate(
                app.store, app.registry, model, target.aggregate_id, upto, tenant=target.tenant
            )

    done = run(go)
    if as_json:
        print_json_lines(
            [
                {
                    "stream": stream,
                    "upto": done.sequence,
                    "event_id": done.event_id,
                    "type": done.type,
                    "position": str(done.position),
                }
            ]
        )
        return
    print(f"{stream} compacted up to {done.sequence}: {done.type} {done.event_id}")


def _rules_json(rules: Retention) -> dict[str, Any]:
    return {
        "max_age": rules.max_age,
        "max_count": rules.max_count,
        "truncate_before": rules.truncate_before,
    }


def _print_rules(stream: str, rules: Retention, as_json: bool) -> None:
    if as_json:
        print_json_lines([{"stream": stream, **_rules_json(rules)}])
        return
    shown = table("stream", "max age (s)", "max count", "truncate before")
    shown.add_row(
        stream,
        "-" if rules.max_age is None else f"{rules.max_age:g}",
        "-" if rules.max_count is None else str(rules.max_count),
        "-" if rules.truncate_before is None else str(rules.truncate_before),
    )
    print_table(console(), shown)


@retention.command("set")
def retention_set(
    stream: str = typer.Argument(..., help="DOMAIN/AGGREGATE_ID"),
    store: str | None = STORE_OPTION,
    max_age: str | None = typer.Option(None, help="e.g. 3600, 90s, 12h, 30d."),
    max_count: int | None = typer.Option(None, help="Keep only the last N events."),
    truncate_before: int | None = typer.Option(None, help="Hide events below this sequence."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines."),
) -> None:
    """Set a stream's retention rules (max age and max count are replaced)."""

    async def go() -> Retention:
        rules = check_retention(max_age, max_count, truncate_before)
        async with open_store(store_url(store), create=False) as s:
            return await s.set_retention(StreamId.parse(stream), rules)

    _print_rules(stream, run(go), as_json)


@retention.command("show")
def retention_show(
    stream: str = typer.Argument(..., help="DOMAIN/AGGREGATE_ID"),
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="JSON lines."),
) -> None:
    """Show a stream's own retention rules."""

    async def go() -> Retention:
        async with open_store(store_url(store), create=False) as s:
            return await s.get_retention(StreamId.parse(stream))

    _print_rules(stream, run(go), as_json)


def scavenge_command(
    store: str | None = STORE_OPTION,
    config: str | None = typer.Option(
        None, "--config", help="A chronik.yaml: its retention.domains defaults apply."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Change nothing: report what would go."),
    batch_size: int = typer.Option(500, help="Events per transaction."),
    progress: bool = typer.Option(False, "--progress", help="Progress lines on stderr."),
    as_json: bool = typer.Option(False, "--json", help="The report as JSON."),
    archive: str | None = READ_ARCHIVE_OPTION,
) -> None:
    """Remove (or with --dry-run count) the events retention and deletes let go, holding the
    store's scavenger lease (exit 1 while a server's scavenger holds it); with --archive, the
    archived events below each stream's truncation point too."""
    from chronik.lifecycle.scavenger import ScavengeProgress, Scavenger, ScavengeReport
    from chronik.server.config import load_config

    defaults = load_config(config).retention.defaults() if config else {}

    async def go() -> ScavengeReport | None:
        async with (
            open_store(store_url(store), create=False) as opened,
            through_archive(opened, archive) as s,
        ):
            runner = Scavenger(s, defaults, batch_size=batch_size)
            if progress:

                async def show(p: ScavengeProgress) -> None:
                    print(
                        f"scanned {p.scanned} streams, {p.events} events, {p.bytes} bytes",
                        file=sys.stderr,
                        flush=True,
                    )

                runner.on_progress = show
            try:
                return await runner.run_once(dry_run=dry_run)
            finally:
                await s.release_lease("chronik.scavenger", runner.owner)

    report = run(go)
    if report is None:
        print("error: another process holds the scavenger lease", file=sys.stderr)
        raise typer.Exit(1)
    if as_json:
        import msgspec

        print(msgspec.json.encode(report).decode())
        return
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"{verb} {report.events} events ({report.bytes} bytes) from {report.streams} streams; "
        f"scanned {report.scanned}, {len(report.errors)} errors"
    )
    if report.removed:
        shown = table("stream", "events", "bytes")
        for name, events, size in report.removed:
            shown.add_row(name, str(events), str(size))
        print_table(console(), shown)
    for name, error in report.errors:
        print(f"error: {name}: {error}", file=sys.stderr)
