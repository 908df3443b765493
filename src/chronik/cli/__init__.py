"""The ``chronik`` command: look at and manage a store from the shell (extra ``cli``).

What lives here: ``main`` and ``_build``, which only assemble the command groups. The commands
are module-level functions, one module per group: ``db`` (schema), ``events`` (streams and
events), ``projections``, ``outbox``, ``serve``; what they share (the store option, one-line
errors, tables, JSON Lines) is ``common``. The command modules import ``common`` and chronik's
core, never this package's ``__init__`` or each other; ``__init__`` imports them, lazily, so
that ``import chronik.cli`` works without the extra.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

__all__ = ["main", "print_json_lines", "print_table", "table", "use_app_dir"]

_SHARED = ("print_json_lines", "print_table", "table", "use_app_dir")


def __getattr__(name: str) -> Any:
    """The shared helpers (``chronik.cli.common``) under their old import path."""
    if name in _SHARED:
        from chronik.cli import common

        return getattr(common, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build() -> typer.Typer:
    """The ``chronik`` app: the command groups of the submodules, assembled."""
    import typer

    from chronik.cli.archive import archive
    from chronik.cli.cluster import cluster
    from chronik.cli.common import root
    from chronik.cli.db import db
    from chronik.cli.events import events, streams
    from chronik.cli.gdpr import events_redact, gdpr
    from chronik.cli.knative import knative
    from chronik.cli.lifecycle import backup, export, import_, move
    from chronik.cli.outbox import outbox
    from chronik.cli.projections import app as projections
    from chronik.cli.serve import serve
    from chronik.cli.streams import retention, scavenge_command, streams_compact, streams_delete
    from chronik.cli.transport import transport

    app = typer.Typer(
        help="chronik: event sourcing for Python.", no_args_is_help=True, add_completion=False
    )
    app.add_typer(db, name="db")
    streams.command("delete")(streams_delete)
    streams.command("compact")(streams_compact)
    streams.add_typer(retention, name="retention")
    app.add_typer(streams, name="streams")
    events.command("redact")(events_redact)
    app.add_typer(events, name="events")
    app.add_typer(projections, name="projections")
    app.add_typer(outbox, name="outbox")
    app.add_typer(knative, name="knative")
    app.add_typer(gdpr, name="gdpr")
    app.add_typer(transport, name="transport")
    app.add_typer(cluster, name="cluster")
    app.add_typer(archive, name="archive")
    app.command()(serve)
    app.command("export")(export)
    app.command("import")(import_)
    app.command("move")(move)
    app.command("backup")(backup)
    app.command("scavenge")(scavenge_command)
    app.callback()(root)
    return app


def main() -> None:
    """Entry point of the ``chronik`` command."""
    try:
        import rich  # noqa: F401
        import typer  # noqa: F401
    except ImportError:
        print("the chronik command needs: pip install 'chronik[cli]'", file=sys.stderr)
        raise SystemExit(2) from None
    if sys.argv[1:2] == ["serve"]:  # a long-lived server imports no other command's modules
        _build_serve()()
    else:
        _build()()


def _build_serve() -> typer.Typer:
    """The ``chronik`` app with ``serve`` alone (its help and errors are the same)."""
    import typer

    from chronik.cli.common import root
    from chronik.cli.serve import serve

    app = typer.Typer(help="chronik: event sourcing for Python.", add_completion=False)
    app.command()(serve)
    app.callback()(root)
    return app
