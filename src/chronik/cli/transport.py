"""``chronik transport dead-letters``: list, show, retry and drop a transport's dead letters.

Each command opens the transport ``--transport`` names (``CHRONIK_TRANSPORT`` by default),
works through the port (``Transport.dead_letters``, ``inspect``, ``retry``, ``drop``; see
``chronik.transports.dead_letters``) and closes it. ``retry`` and ``drop`` ask first unless
``--yes``, and are logged with the user who ran them.
"""

from __future__ import annotations

import datetime
import getpass
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer

from chronik.cli.common import console, print_json_lines, print_table, run, table
from chronik.transports.dead_letters import DeadLetter

__all__ = ["build_transport", "transport"]

T = TypeVar("T")
transport = typer.Typer(help="Message transports: their dead letters.", no_args_is_help=True)
dead_letters = typer.Typer(
    help="Messages consumers gave up on: list, show, retry to their group, drop.",
    no_args_is_help=True,
)
transport.add_typer(dead_letters, name="dead-letters")

TRANSPORT_OPTION = typer.Option(
    ...,
    "--transport",
    envvar="CHRONIK_TRANSPORT",
    help="memory://, postgresql://, nats://, amqp:// (or CHRONIK_TRANSPORT)",
)
QUEUE_ARGUMENT = typer.Argument(..., help="the dead-letter queue, e.g. orders.billing.dead")
YES_OPTION = typer.Option(False, "--yes", "-y", help="do not ask for confirmation")


async def with_transport(url: str, act: Callable[[Any], Awaitable[T]]) -> T:
    """``act`` on the transport ``url`` names, opened and closed around it."""
    from chronik.transports import open_transport

    async with open_transport(url) as t:
        return await act(t)


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli"


@dead_letters.command("list")
def list_(
    queue: str = QUEUE_ARGUMENT,
    url: str = TRANSPORT_OPTION,
    limit: int = typer.Option(100, "--limit", help="at most this many (1..1000)"),
    after: str | None = typer.Option(None, "--after", help="the last id of the previous page"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines."),
) -> None:
    """The dead letters of QUEUE, oldest first; nothing is consumed."""
    letters = run(
        lambda: with_transport(url, lambda t: t.dead_letters(queue, limit=limit, after=after))
    )
    if as_json:
        print_json_lines(d.to_dict() for d in letters)
        return
    shown = table(
        "id", "message id", "from", "attempts", "dead at", "reason", "body", text=["reason", "body"]
    )
    for d in letters:
        origin = f"{d.topic}/{d.group}" if d.group else d.topic
        body = f"{d.size} B: {d.preview[:40]}"
        shown.add_row(d.id, d.message_id, origin, str(d.attempts), _when(d.at), d.reason, body)
    print_table(console(), shown)
    if not letters:
        console().print(f"no dead letters in {queue}", highlight=False)


@dead_letters.command("show")
def show(
    queue: str = QUEUE_ARGUMENT,
    letter_id: str = typer.Argument(..., metavar="ID", help="the id `list` shows"),
    url: str = TRANSPORT_OPTION,
    as_json: bool = typer.Option(False, "--json", help="one JSON object."),
) -> None:
    """One dead letter with its headers and whole body."""
    d: DeadLetter = run(lambda: with_transport(url, lambda t: t.inspect(queue, letter_id)))
    if as_json:
        print_json_lines([d.to_dict()])
        return
    out = console()
    origin = f"topic {d.topic}, group {d.group}" if d.group else f"queue {d.topic}"
    out.print(f"dead letter {d.id} of {d.queue}: message {d.message_id}", highlight=False)
    out.print(f"from:     {origin}", highlight=False)
    out.print(f"attempts: {d.attempts}, dead at {_when(d.at)}", highlight=False)
    out.print(f"reason:   {d.reason}", highlight=False)
    out.print(f"key:      {d.key or '-'}", highlight=False)
    out.print(f"headers:  {json.dumps(d.headers, sort_keys=True)}", highlight=False)
    body = (d.body or b"").decode("utf-8", "replace")
    out.print(f"body ({d.size} bytes):", highlight=False)
    out.print(body, highlight=False, markup=False)


def _act(action: str, queue: str, ids: list[str], url: str, yes: bool) -> list[DeadLetter]:
    what = "publish again to their group" if action == "retry" else "delete for good (never sent)"
    if not yes:
        typer.confirm(f"{action} {len(ids)} dead letter(s) of {queue}: {what}?", abort=True)
    who = _who()

    async def each(t: Any) -> list[DeadLetter]:
        method = t.retry if action == "retry" else t.drop
        return [await method(queue, i, by=who) for i in ids]

    return run(lambda: with_transport(url, each))


@dead_letters.command("retry")
def retry(
    queue: str = QUEUE_ARGUMENT,
    ids: list[str] = typer.Argument(..., metavar="ID...", help="the ids `list` shows"),
    url: str = TRANSPORT_OPTION,
    yes: bool = YES_OPTION,
) -> None:
    """Publish dead letters again to their original group only, then remove them."""
    for d in _act("retry", queue, ids, url, yes):
        where = f"{d.topic}/{d.group}" if d.group else d.topic
        console().print(f"retried {d.id} (message {d.message_id}) to {where}", highlight=False)


@dead_letters.command("drop")
def drop(
    queue: str = QUEUE_ARGUMENT,
    ids: list[str] = typer.Argument(..., metavar="ID...", help="the ids `list` shows"),
    url: str = TRANSPORT_OPTION,
    yes: bool = YES_OPTION,
) -> None:
    """Delete dead letters for good: they are never delivered again."""
    for d in _act("drop", queue, ids, url, yes):
        console().print(f"dropped {d.id} (message {d.message_id})", highlight=False)


def build_transport() -> typer.Typer:
    """The ``transport`` sub-command group (its commands are this module's functions)."""
    return transport
