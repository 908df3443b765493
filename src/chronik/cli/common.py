"""What every ``chronik`` command shares: the store option, running a coroutine with a one-line
``error: ...``, tables that never cut an identifier, JSON Lines, event lines.

Needs the ``cli`` extra (typer, rich). Imports chronik's core only; every command module
imports it, it imports no command module.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:  # rich is imported by the commands that print (not by ``serve``)
    from rich.console import Console
    from rich.table import Table

from chronik.errors import ChronikError, ConfigurationError
from chronik.messages import JSON, RecordedEvent

__all__ = [
    "DEFAULT_STORE",
    "STORE_OPTION",
    "console",
    "event_json",
    "fail",
    "print_event",
    "print_json_lines",
    "print_table",
    "root",
    "run",
    "short",
    "store_url",
    "table",
    "use_app_dir",
]

DEFAULT_STORE = "sqlite:///data/events.db"
T = TypeVar("T")
#: the ``--store`` option of every command that opens a store
STORE_OPTION: Any = typer.Option(
    None, "--store", help=f"Store URL [env CHRONIK_STORE; default {DEFAULT_STORE}]"
)


def _version(value: bool) -> None:
    if value:
        from chronik import __version__

        print(f"chronik {__version__}")
        raise typer.Exit()


def root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """chronik: event sourcing for Python."""


def console() -> Console:
    """A console on stdout, made when a command prints (it reads the terminal's width)."""
    from rich.console import Console

    return Console()


def store_url(store: str | None) -> str:
    """The store URL: ``--store``, else ``$CHRONIK_STORE``, else the default."""
    return store or os.environ.get("CHRONIK_STORE") or DEFAULT_STORE


def fail(err: BaseException) -> typer.Exit:
    """Print ``error: ...`` (one line, no traceback) to stderr; the Exit(1) to raise."""
    text = str(err) if isinstance(err, ChronikError) else f"{type(err).__name__}: {err}"
    print(f"error: {' '.join(text.split())}", file=sys.stderr, flush=True)
    return typer.Exit(1)


def run(make: Callable[[], Awaitable[T]]) -> T:
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
    from rich.table import Table

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
    from rich.measure import Measurement

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
    from rich import box

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


def short(e: RecordedEvent, width: int = 60) -> str:
    """An event's payload in one line of at most ``width`` characters."""
    text = (
        json.dumps(e.json(), separators=(",", ":"))
        if e.content_type == JSON
        else f"<{len(e.payload)} bytes {e.content_type}>"
    )
    return text if len(text) <= width else text[: width - 1] + "…"


def print_event(console: Console, e: RecordedEvent, as_json: bool) -> None:
    """One event: a JSON line, or a line of position, stream, sequence, type and payload."""
    if as_json:
        print(json.dumps(event_json(e)), flush=True)
    else:
        console.print(
            f"[dim]@{e.position}[/dim] {e.stream} #{e.sequence} [bold]{e.type}[/bold] {short(e)}",
            highlight=False,
            soft_wrap=True,
        )
