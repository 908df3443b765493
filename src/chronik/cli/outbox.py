"""``chronik outbox``: status, list, retry and drop from any process; ``run`` dispatches."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import msgspec
import typer

from chronik.cli.common import (
    STORE_OPTION,
    console,
    print_json_lines,
    print_table,
    run,
    store_url,
    table,
)
from chronik.outbox import OutboxAdmin, OutboxDispatcher
from chronik.store import open_store

__all__ = ["build_outbox", "outbox"]


outbox = typer.Typer(help="The outbox: messages waiting to be published.", no_args_is_help=True)


async def with_admin(store: str | None, act: Any) -> Any:
    """``act`` on the OutboxAdmin of the store ``--store`` names."""
    async with open_store(store_url(store), create=False) as s:
        return await act(OutboxAdmin(s))


@outbox.command("status")
def status(
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="JSON lines (one object)."),
) -> None:
    """Counts by state, the oldest pending message's age, the active dispatcher."""
    st = run(lambda: with_admin(store, lambda a: a.status()))
    if as_json:
        print_json_lines([msgspec.to_builtins(st)])
        return
    age = "-" if st.oldest_pending_age_s is None else f"{st.oldest_pending_age_s:.1f}s"
    console().print(
        f"pending {st.pending}  done {st.done}  failed {st.failed}  oldest pending {age}  "
        f"dispatcher {st.dispatcher or '-'}",
        highlight=False,
    )
    if st.blocked_keys:
        console().print(
            f"blocked: {st.blocked} pending message(s) wait behind failed ones of "
            f"{', '.join(st.blocked_keys)}: `chronik outbox retry` or `drop` them",
            highlight=False,
        )


@outbox.command("list")
def list_(
    store: str | None = STORE_OPTION,
    state: str | None = typer.Option(None, "--state", help="pending, done or failed"),
    limit: int = typer.Option(100, "--limit"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines."),
) -> None:
    """Outbox messages, oldest first."""
    rows = run(lambda: with_admin(store, lambda a: a.messages(state, limit)))
    if as_json:
        print_json_lines(rows)
        return
    shown = table(
        "id", "kind", "topic", "key", "state", "attempts", "last error", text=["last error"]
    )
    for r in rows:
        state = r["state"]
        if r["blocked_by"] is not None:
            state += f" (blocked by {r['blocked_by']})"
        shown.add_row(
            r["id"],
            r["kind"],
            r["topic"],
            r["msg_key"] or "",
            state,
            str(r["attempts"]),
            r["last_error"] or "",
        )
    print_table(console(), shown)


@outbox.command("retry")
def retry(
    message_id: str | None = typer.Argument(None, help="one message; default: every failed"),
    store: str | None = STORE_OPTION,
) -> None:
    """Make failed messages pending again (their keys' held-back messages follow, in order)."""
    n = run(lambda: with_admin(store, lambda a: a.retry(message_id)))
    console().print(f"{n} message(s) will be sent again", highlight=False)


@outbox.command("drop")
def drop(
    message_id: str | None = typer.Argument(None, help="one message; default: every failed"),
    store: str | None = STORE_OPTION,
) -> None:
    """Delete failed messages: they will never be sent; their keys' later messages flow."""
    n = run(lambda: with_admin(store, lambda a: a.drop(message_id)))
    console().print(f"{n} message(s) dropped", highlight=False)


@outbox.command("run")
def run_dispatcher(
    transport: str = typer.Option(..., "--transport", help="memory://, nats://, amqp://, ..."),
    store: str | None = STORE_OPTION,
    batch_size: int = typer.Option(100, "--batch-size"),
    lease_ttl: float = typer.Option(10.0, "--lease-ttl", help="seconds a dead one blocks"),
) -> None:
    """Dispatch outbox messages until SIGTERM or Ctrl-C."""
    from chronik.transports import open_transport

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with (
            open_store(store_url(store)) as s,
            open_transport(transport) as t,
            OutboxDispatcher(s, t, batch_size=batch_size, lease_ttl=lease_ttl),
        ):
            print("outbox dispatcher running", flush=True)
            await stop.wait()

    run(serve)


def build_outbox() -> typer.Typer:
    """The ``outbox`` sub-command group (its commands are this module's functions)."""
    return outbox
