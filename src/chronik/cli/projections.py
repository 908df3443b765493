"""``chronik projections``: status, rebuild, reset, pause, resume and dead letters.

The commands read the projections' status rows and write control requests in the store's
database, so they work from any process: a running processor (``chronik serve`` or an app)
picks a request up within a heartbeat. With no processor running a request waits for one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from chronik.cli.common import (
    STORE_OPTION,
    console,
    print_json_lines,
    print_table,
    run,
    store_url,
    table,
)
from chronik.errors import ValidationError
from chronik.messages import Position
from chronik.projections import ProjectionAdmin, ProjectionStatus
from chronik.projections.bookkeeping import load_plan
from chronik.store import open_store

__all__ = ["app", "build_projections", "letters"]

CONFIRM_SECONDS = 5.0  # how long a command waits for a running processor to take its request


def _position(text: str | None) -> int:
    return Position.parse(text).commit if text else 0


async def _send(
    url: str, name: str, action: str, arg: str = "", asked: str = "", then: str = ""
) -> str:
    """Queue a request; wait briefly for live processors to take it; say what happened.

    ``asked`` is the request in the user's terms (default ``ACTION of NAME``); ``then`` what
    it means for the events handled next, said instead of the position reached."""
    asked = asked or f"{action} of {name}"
    after_that = f"; {then}" if then else ""
    async with open_store(url, create=False) as store:
        admin = ProjectionAdmin(store)
        before = await admin.status_of(name)
        request_id = await admin.request(name, action, arg)
        if not any(s.alive for s in before):
            return (
                f"{asked} queued: no processor of {name} is running "
                f"(it applies the request when it starts){after_that}"
            )
        deadline = time.monotonic() + CONFIRM_SECONDS
        while time.monotonic() < deadline:
            if not await admin.pending(request_id):
                after = await admin.status_of(name)
                if not then:
                    shown = ", ".join(f"{s.name} {s.state} at {s.position}" for s in after)
                    return f"{asked} done: {shown}"
                states = ", ".join(f"{s.name} {s.state}" for s in after)
                return f"{asked} done: {then} ({states})"
            await asyncio.sleep(0.05)
        return f"{asked} queued: the processor has not taken it yet{after_that}"


def _reset_terms(name: str, to: str | None) -> tuple[str, str]:
    """A reset request and what it means, in the user's terms."""
    if to is None:
        return f"reset of {name} to the start", "it replays every event into empty tables"
    return (
        f"reset of {name} to position {to}",
        f"the next event it handles is the first after {to}",
    )


def _status_table(rows: list[ProjectionStatus]) -> Table:
    shown = table(
        "name",
        "state",
        "position",
        "head",
        "lag",
        "lag s",
        "ev/s",
        "dead",
        "error",
        text=["error"],
    )
    for s in rows:
        if s.horizon_events:  # events no reader may pass yet: an older transaction runs
            s.last_error = (
                f"{s.horizon_events} events held back {s.horizon_seconds:.0f} s by a running "
                f"transaction; {s.last_error or ''}"
            ).rstrip("; ")
        state = (
            s.state if s.building is None else f"{s.state} (g{s.building} at {s.build_position})"
        )
        shown.add_row(
            s.name,
            state,
            s.position or "-",
            s.head or "-",
            str(s.lag_events),
            f"{s.lag_seconds:.1f}",
            f"{s.events_per_s:.0f}",
            str(s.dead_letters),
            (s.last_error or "")[:60],
        )
    return shown


app = typer.Typer(help="Projections: status, rebuild, reset, pause, resume.", no_args_is_help=True)
letters = typer.Typer(help="Events parked by a projection's error policy.", no_args_is_help=True)
app.add_typer(letters, name="dead-letters")


@app.command("status")
def status(
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="JSON lines."),
) -> None:
    """Each projection: state, position, head, lag, events/s, last error, heartbeat."""

    async def go() -> list[ProjectionStatus]:
        async with open_store(store_url(store), create=False) as s:
            return await ProjectionAdmin(s).statuses()

    rows = run(go)
    if as_json:
        print_json_lines(r.to_json() for r in rows)
    elif not rows:
        console().print("no projections have run against this store yet")
    else:
        print_table(console(), _status_table(rows))


@app.command("pause")
def pause(name: str, store: str | None = STORE_OPTION) -> None:
    """Pause a projection (it keeps its heartbeat and position)."""
    console().print(run(lambda: _send(store_url(store), name, "pause")), highlight=False)


@app.command("resume")
def resume(name: str, store: str | None = STORE_OPTION) -> None:
    """Resume a paused or stopped projection."""
    console().print(run(lambda: _send(store_url(store), name, "resume")), highlight=False)


@app.command("reset")
def reset(
    name: str,
    store: str | None = STORE_OPTION,
    to: str | None = typer.Option(
        None, "--to", help="Replay the events after this position (default: from the start)."
    ),
) -> None:
    """Replay a projection: from the start (its tables cleared) or after a position."""
    if to is not None:
        run(lambda: _check_position(to))
    asked, then = _reset_terms(name, to)
    console().print(
        run(lambda: _send(store_url(store), name, "reset", to or "", asked, then)),
        highlight=False,
    )


@app.command("rebuild")
def rebuild(
    name: str,
    store: str | None = STORE_OPTION,
    wait: bool = typer.Option(True, help="Follow the rebuild with a progress bar."),
) -> None:
    """Rebuild into new tables while the current ones serve; switch when caught up."""
    console().print(run(lambda: _rebuild(store_url(store), name, wait)), highlight=False)


@app.command("repartition")
def repartition(
    name: str,
    partitions: int = typer.Option(..., "--partitions", "-n", help="The new count (2..256)."),
    store: str | None = STORE_OPTION,
    wait: float = typer.Option(60.0, help="Seconds to follow it (0: only request it)."),
) -> None:
    """Change a partitioned projection's partition count without a rebuild."""
    from chronik.cli.repartition import repartition as go

    console().print(run(lambda: go(store_url(store), name, partitions, wait)), highlight=False)


@letters.command("list")
def letters_list(
    name: str | None = typer.Argument(None, help="Only this projection."),
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="JSON lines."),
) -> None:
    """Parked events, oldest first (the failed one of each stream, then those behind it)."""

    async def go() -> list[dict[str, Any]]:
        async with open_store(store_url(store), create=False) as s:
            return [msgspec.to_builtins(d) for d in await ProjectionAdmin(s).dead_letters(name)]

    rows = run(go)
    if as_json:
        print_json_lines(rows)
        return
    shown = table(
        "projection",
        "position",
        "stream",
        "seq",
        "type",
        "blocked",
        "tries",
        "error",
        text=["error"],
    )
    for d in rows:
        shown.add_row(
            d["projection"],
            d["position"],
            d["stream"],
            str(d["sequence"]),
            d["type"],
            "yes" if d["blocked"] else "",
            str(d["attempts"]),
            (d["error"] or "")[:60],
        )
    print_table(console(), shown)


@letters.command("retry")
def letters_retry(
    name: str,
    store: str | None = STORE_OPTION,
    stream: str | None = typer.Option(None, help="Only this stream (DOMAIN/ID)."),
    event: str | None = typer.Option(None, help="Only the stream of this parked event."),
) -> None:
    """Apply parked events again, per stream in order; streams that succeed flow on."""
    arg = stream or event or ""
    console().print(run(lambda: _send(store_url(store), name, "retry", arg)), highlight=False)


@letters.command("drop")
def letters_drop(
    name: str,
    store: str | None = STORE_OPTION,
    event: str | None = typer.Option(None, help="Only this event id."),
    stream: str | None = typer.Option(None, help="Every parked event of this stream."),
    all_: bool = typer.Option(False, "--all", help="Every parked event of the projection."),
) -> None:
    """Delete parked events without applying them (choose --event, --stream or --all)."""

    async def go() -> str:
        if not (event or stream or all_):
            raise ValidationError("say what to drop: --event ID, --stream S or --all")
        async with open_store(store_url(store), create=False) as s:
            admin = ProjectionAdmin(s)
            n = await admin.drop_dead_letters(name, event, stream)
            deadline = time.monotonic() + CONFIRM_SECONDS
            while time.monotonic() < deadline and (await admin.status(name)).alive:
                if not await admin.pending_for(name):
                    break
                await asyncio.sleep(0.05)
        return f"dropped {n} dead letter(s) of {name}"

    console().print(run(go), highlight=False)


def build_projections() -> typer.Typer:
    """The ``projections`` sub-command group (its commands are this module's functions)."""
    return app


async def _check_position(text: str) -> None:
    Position.parse(text)


async def _rebuild(url: str, name: str, wait: bool) -> str:
    """Request a rebuild; follow it with a progress bar (events/s, ETA) until it took over.

    A partitioned projection's progress is its slowest partition's, its rate the sum of theirs.
    """
    async with open_store(url, create=False) as store:
        admin = ProjectionAdmin(store)
        start = await _generation(admin, name)
        message = await _send(url, name, "rebuild")
        if not wait or not any(s.alive for s in await admin.status_of(name)):
            return message
        progress = Progress(
            TextColumn(f"rebuilding {name}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]:>9} ev/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        with progress:
            task = progress.add_task("rebuild", total=None, rate="-")
            while True:
                rows = await admin.status_of(name)
                generation, building = await _generation(admin, name)
                if not any(s.alive for s in rows):
                    states = ", ".join(sorted({s.state for s in rows}))
                    return f"the processor of {name} stopped during the rebuild (state {states})"
                head = max(_position(s.head) for s in rows)
                if building is None and generation != start[0]:
                    progress.update(task, total=head or 1, completed=head or 1)
                    at = ", ".join(str(s.position) for s in rows)
                    return f"rebuilt {name}: generation {generation} serves at {at}"
                stopped = [s for s in rows if s.state == "stopped" and s.alive]
                if stopped:
                    return f"rebuild of {name} stopped: {stopped[0].last_error}"
                done = min(
                    _position(s.build_position) if s.building == building else 0 for s in rows
                )
                rate = sum(s.events_per_s for s in rows)
                progress.update(task, total=max(1, head), completed=done, rate=f"{rate:,.0f}")
                await asyncio.sleep(0.2)


async def _generation(admin: ProjectionAdmin, name: str) -> tuple[int, int | None]:
    """The serving and building generation of a projection (a partitioned one: its plan)."""
    rows = await admin.status_of(name)
    if len(rows) == 1 and rows[0].name == name:
        return rows[0].generation, rows[0].building
    plan = await load_plan(admin.store, name)
    return (plan.generation, plan.building) if plan is not None else (1, None)
