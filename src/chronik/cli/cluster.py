"""``chronik cluster status``: the nodes registered in a store, live and recently gone."""

from __future__ import annotations

import datetime

import typer

from chronik.cli.cluster_up import up
from chronik.cli.common import (
    STORE_OPTION,
    console,
    print_json_lines,
    print_table,
    run,
    store_url,
    table,
)
from chronik.cluster import Member, MembershipView, read_view
from chronik.store import open_store

__all__ = ["cluster", "status"]

cluster = typer.Typer(help="Cluster membership: the chronik nodes.", no_args_is_help=True)


async def _view(store: str | None, forget_after: float) -> MembershipView:
    async with open_store(store_url(store), create=False) as s:
        return await read_view(s, forget_after=forget_after)


def _ago(member: Member, at: float) -> str:
    if member.alive:
        return f"{max(0.0, at - member.last_seen):.1f}s ago"
    when = datetime.datetime.fromtimestamp(member.last_seen, datetime.UTC)
    return f"{when:%Y-%m-%d %H:%M:%S} ({at - member.last_seen:.0f}s ago)"


def _load(member: Member) -> str:
    return " ".join(f"{k}={v:g}" for k, v in sorted(member.load.items())) or "-"


@cluster.command("status")
def status(
    store: str | None = STORE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="JSON lines (one object)."),
    forget_after: float = typer.Option(
        300.0, "--forget-after", help="seconds a gone node is still listed"
    ),
) -> None:
    """The members: id, addresses, version, alive or gone (and when last seen), load, parts."""
    view = run(lambda: _view(store, forget_after))
    if as_json:
        print_json_lines([view.to_json()])
        return
    out = console()
    if not view.members:
        out.print("no member: no node runs with cluster.enabled on this store", highlight=False)
        return
    shown = table(
        "node", "grpc", "http", "version", "state", "last seen", "load", "parts", text=["parts"]
    )
    for m in view.members:
        shown.add_row(
            m.node_id,
            m.grpc or "-",
            m.http or "-",
            m.version or "-",
            m.state,
            _ago(m, view.at),
            _load(m),
            ", ".join(m.parts) or "-",
        )
    print_table(out, shown)
    out.print(
        f"{len(view.live)} live of {len(view.members)}  digest {view.digest}", highlight=False
    )


cluster.command("up")(up)  # chronik cluster up: a local development cluster (cli/cluster_up.py)
