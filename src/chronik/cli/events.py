"""``chronik streams`` and ``chronik events``: list streams, read a stream, follow events live."""

from __future__ import annotations

import contextlib

import typer
from rich.console import Console

from chronik.cli.common import (
    STORE_OPTION,
    console,
    event_json,
    print_event,
    print_json_lines,
    print_table,
    run,
    short,
    store_url,
    table,
)
from chronik.messages import Position, RecordedEvent, StreamId
from chronik.store import open_store

__all__ = ["events", "streams"]

streams = typer.Typer(help="Streams.", no_args_is_help=True)
events = typer.Typer(help="Events.", no_args_is_help=True)


@streams.command("list")
def streams_list(
    store: str | None = STORE_OPTION,
    domain: str | None = typer.Option(None, help="Only this domain."),
    prefix: str | None = typer.Option(None, help="Only aggregate ids with this prefix."),
    limit: int = typer.Option(100, help="At most this many streams."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines."),
) -> None:
    """List streams and their versions."""

    async def go() -> list[tuple[str, int]]:
        async with open_store(store_url(store), create=False) as s:
            return [(str(i.stream), i.version) async for i in s.list_streams(domain, prefix, limit)]

    rows = run(go)
    if as_json:
        print_json_lines({"stream": name, "version": version} for name, version in rows)
        return
    shown = table("stream", "version")
    for name, version in rows:
        shown.add_row(name, str(version))
    print_table(console(), shown)


@events.command("read")
def events_read(
    stream: str = typer.Argument(..., help="DOMAIN/AGGREGATE_ID"),
    store: str | None = STORE_OPTION,
    from_: int | None = typer.Option(None, "--from", help="Start at this sequence."),
    backward: bool = typer.Option(False, help="Newest first."),
    limit: int | None = typer.Option(None, help="At most this many events."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines."),
) -> None:
    """Read the events of one stream."""

    async def go() -> list[RecordedEvent]:
        sid = StreamId.parse(stream)
        async with open_store(store_url(store), create=False) as s:
            return [e async for e in s.read_stream(sid, from_, backward, limit)]

    found = run(go)
    if as_json:
        print_json_lines(event_json(e) for e in found)
        return
    shown = table("seq", "type", "position", "recorded at", "payload", text=["payload"])
    for e in found:
        shown.add_row(
            str(e.sequence),
            e.type,
            str(e.position),
            e.recorded_at.strftime("%Y-%m-%d %H:%M:%S"),
            short(e),
        )
    print_table(console(), shown)


@events.command("tail")
def events_tail(
    store: str | None = STORE_OPTION,
    domain: list[str] | None = typer.Option(None, help="Only these domains."),
    type_: list[str] | None = typer.Option(None, "--type", help="Only these types."),
    from_start: bool = typer.Option(False, "--from-start", help="Replay stored events."),
    after: str | None = typer.Option(None, help="Start after this position."),
    count: int | None = typer.Option(None, hidden=True, help="Stop after N events."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines."),
) -> None:
    """Follow new events live (Ctrl-C to stop)."""
    out = console()

    async def go() -> None:
        async with open_store(store_url(store), create=False) as s:
            start = Position.parse(after) if after else (None if from_start else await s.head())
            if not as_json:
                Console(stderr=True).print(
                    f"following {s.url} after {start or 'start'}", style="dim"
                )
            seen = 0
            async with s.subscribe(start, domain or None, type_ or None) as sub:
                async for e in sub:
                    print_event(out, e, as_json)
                    seen += 1
                    if count is not None and seen >= count:
                        return

    with contextlib.suppress(KeyboardInterrupt):
        run(go)
