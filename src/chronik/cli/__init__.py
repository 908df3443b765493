"""The ``chronik`` command: look at and manage a store from the shell (extra ``cli``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from chronik.errors import ChronikError, ConfigurationError
from chronik.messages import JSON, Position, RecordedEvent, StreamId
from chronik.store import open_store

try:
    import typer
    from rich import box
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table
except ImportError:  # pragma: no cover - exercised without the extra
    typer = None  # type: ignore[assignment]

__all__ = ["main", "print_json_lines", "print_table", "table", "use_app_dir"]

DEFAULT_STORE = "sqlite:///data/events.db"
T = TypeVar("T")


def _store_url(store: str | None) -> str:
    return store or os.environ.get("CHRONIK_STORE") or DEFAULT_STORE


def fail(err: BaseException) -> typer.Exit:
    """Print ``error: ...`` (one line, no traceback) to stderr; the Exit(1) to raise."""
    text = str(err) if isinstance(err, ChronikError) else f"{type(err).__name__}: {err}"
    print(f"error: {' '.join(text.split())}", file=sys.stderr, flush=True)
    return typer.Exit(1)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; any error becomes a one-line ``error: ...`` and exit code 1."""
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as err:
        raise fail(err) from None


def use_app_dir(app_dir: str | Path) -> str:
    """Put ``app_dir`` first on ``sys.path``, as ``python -m`` does with the working directory,
    so the console script finds a project's modules too; the absolute path it inserted.

    ConfigurationError (naming ``--app-dir``) if it is not a directory.
    """
    path = Path(app_dir).resolve()
    if not path.is_dir():
        raise ConfigurationError(f"--app-dir {app_dir}: not a directory")
    text = str(path)
    if text in sys.path:
        sys.path.remove(text)
    sys.path.insert(0, text)
    return text


def print_json_lines(rows: Iterable[Any]) -> None:
    """Every ``--json`` output: JSON Lines, one object per line (nothing when there is none)."""
    for row in rows:
        print(json.dumps(row), flush=True)


def table(*headers: str, text: Iterable[str] = ()) -> Table:
    """A table whose columns are never cut (names, ids, positions, types), except the free
    ``text`` columns (errors, payloads), which wrap. Print it with :func:`print_table`."""
    wrapping = set(text)
    made = Table()
    for h in headers:
        if h in wrapping:
            made.add_column(h, overflow="fold")
        else:
            made.add_column(h, no_wrap=True)
    return made


TEXT_MIN = 12  # the narrowest a wrapping column gets before the table outgrows the terminal


def _needed_width(console: Console, shown: Table) -> int:
    """The table's width with every identifier whole and the text columns narrow."""
    wide = console.options.update_width(10**5)
    for column in shown.columns:
        if column.no_wrap:
            cells = [column.header, *column.cells]
            column.min_width = max(Measurement.get(console, wide, c).maximum for c in cells)
        else:
            column.max_width = TEXT_MIN
    need = Measurement.get(console, wide, shown).minimum
    for column in shown.columns:
        if not column.no_wrap:
            column.max_width = None
    return need


def print_table(console: Console, shown: Table) -> None:
    """Print a table whole: on a narrow terminal it drops its side borders first and then,
    rather than cut an identifier, prints lines wider than the terminal (which wraps them)."""
    need = _needed_width(console, shown)
    if need > console.width:
        shown.box, shown.show_edge, shown.pad_edge = box.SIMPLE_HEAD, False, False
        shown.collapse_padding = True
        need = _needed_width(console, shown)
    width = console.width
    try:
        console.width = max(width, need)
        console.print(shown)
    finally:
        console.width = width


def event_json(e: RecordedEvent) -> dict[str, Any]:
    """An event as a JSON-ready dict (see ``RecordedEvent.to_dict``)."""
    return e.to_dict()


def _short(e: RecordedEvent, width: int = 60) -> str:
    text = (
        json.dumps(e.json(), separators=(",", ":"))
        if e.content_type == JSON
        else f"<{len(e.payload)} bytes {e.content_type}>"
    )
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_event(console: Console, e: RecordedEvent, as_json: bool) -> None:
    if as_json:
        print(json.dumps(event_json(e)), flush=True)
    else:
        console.print(
            f"[dim]@{e.position}[/dim] {e.stream} #{e.sequence} [bold]{e.type}[/bold] {_short(e)}",
            highlight=False,
            soft_wrap=True,
        )


async def _migrate(url: str) -> str:
    """Run the store's migrations; PostgreSQL reports the schema versions."""
    if url.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        open_store(url)  # checks the scheme and that the driver is installed
        from chronik.store.postgres import migrate_database
        from chronik.store.postgres.read import safe_url

        before, after = await migrate_database(url)
        change = f"migrated from version {before} to {after}" if before != after else "up to date"
        return f"store {safe_url(url)} is ready: schema {change}"
    async with open_store(url) as s:
        head = await s.head()
    return f"store {url} is ready (head position: {head or 'empty'})"


def _build() -> typer.Typer:
    app = typer.Typer(
        help="chronik: event sourcing for Python.", no_args_is_help=True, add_completion=False
    )
    db = typer.Typer(help="Database schema.", no_args_is_help=True)
    streams = typer.Typer(help="Streams.", no_args_is_help=True)
    events = typer.Typer(help="Events.", no_args_is_help=True)
    app.add_typer(db, name="db")
    app.add_typer(streams, name="streams")
    app.add_typer(events, name="events")
    from chronik.cli.projections import build_projections  # needs this module loaded

    app.add_typer(build_projections(), name="projections")
    from chronik.cli.outbox import build_outbox
    from chronik.cli.serve import add_serve

    app.add_typer(build_outbox(), name="outbox")

    add_serve(app)
    store_opt = typer.Option(
        None, "--store", help=f"Store URL [env CHRONIK_STORE; default {DEFAULT_STORE}]"
    )
    console = Console()

    def version_callback(value: bool) -> None:
        if value:
            from chronik import __version__

            print(f"chronik {__version__}")
            raise typer.Exit()

    @app.callback()
    def root(
        version: bool = typer.Option(
            False,
            "--version",
            callback=version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ) -> None:
        """chronik: event sourcing for Python."""

    @db.command("init")
    def db_init(store: str | None = store_opt) -> None:
        """Create the store's schema (or bring it up to date)."""
        console.print(_run(lambda: _migrate(_store_url(store))), highlight=False)

    @db.command("migrate")
    def db_migrate(store: str | None = store_opt) -> None:
        """Apply the store's pending schema migrations (PostgreSQL: ?schema=NAME)."""
        console.print(_run(lambda: _migrate(_store_url(store))), highlight=False)

    @streams.command("list")
    def streams_list(
        store: str | None = store_opt,
        domain: str | None = typer.Option(None, help="Only this domain."),
        prefix: str | None = typer.Option(None, help="Only aggregate ids with this prefix."),
        limit: int = typer.Option(100, help="At most this many streams."),
        as_json: bool = typer.Option(False, "--json", help="JSON lines."),
    ) -> None:
        """List streams and their versions."""

        async def go() -> list[tuple[str, int]]:
            async with open_store(_store_url(store), create=False) as s:
                return [
                    (str(i.stream), i.version) async for i in s.list_streams(domain, prefix, limit)
                ]

        rows = _run(go)
        if as_json:
            print_json_lines({"stream": name, "version": version} for name, version in rows)
            return
        shown = table("stream", "version")
        for name, version in rows:
            shown.add_row(name, str(version))
        print_table(console, shown)

    @events.command("read")
    def events_read(
        stream: str = typer.Argument(..., help="DOMAIN/AGGREGATE_ID"),
        store: str | None = store_opt,
        from_: int | None = typer.Option(None, "--from", help="Start at this sequence."),
        backward: bool = typer.Option(False, help="Newest first."),
        limit: int | None = typer.Option(None, help="At most this many events."),
        as_json: bool = typer.Option(False, "--json", help="JSON lines."),
    ) -> None:
        """Read the events of one stream."""

        async def go() -> list[RecordedEvent]:
            sid = StreamId.parse(stream)
            async with open_store(_store_url(store), create=False) as s:
                return [e async for e in s.read_stream(sid, from_, backward, limit)]

        found = _run(go)
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
                _short(e),
            )
        print_table(console, shown)

    @events.command("tail")
    def events_tail(
        store: str | None = store_opt,
        domain: list[str] | None = typer.Option(None, help="Only these domains."),  # noqa: B008
        type_: list[str] | None = typer.Option(None, "--type", help="Only these types."),  # noqa: B008
        from_start: bool = typer.Option(False, "--from-start", help="Replay stored events."),
        after: str | None = typer.Option(None, help="Start after this position."),
        count: int | None = typer.Option(None, hidden=True, help="Stop after N events."),
        as_json: bool = typer.Option(False, "--json", help="JSON lines."),
    ) -> None:
        """Follow new events live (Ctrl-C to stop)."""

        async def go() -> None:
            async with open_store(_store_url(store), create=False) as s:
                start = Position.parse(after) if after else (None if from_start else await s.head())
                if not as_json:
                    Console(stderr=True).print(
                        f"following {s.url} after {start or 'start'}", style="dim"
                    )
                seen = 0
                async with s.subscribe(start, domain or None, type_ or None) as sub:
                    async for e in sub:
                        _print_event(console, e, as_json)
                        seen += 1
                        if count is not None and seen >= count:
                            return

        with contextlib.suppress(KeyboardInterrupt):
            _run(go)

    return app


def main() -> None:
    """Entry point of the ``chronik`` command."""
    if typer is None:
        print("the chronik command needs: pip install 'chronik[cli]'", file=sys.stderr)
        raise SystemExit(2)
    _build()()
