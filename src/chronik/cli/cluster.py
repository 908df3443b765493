"""``chronik cluster status``: the nodes registered in a store (or a NATS KV bucket with
``--nats``, or as ``--config``'s ``cluster.backend`` says), live and recently gone."""

from __future__ import annotations

import datetime
from pathlib import Path

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
from chronik.cluster.config import BACKENDS
from chronik.errors import ValidationError
from chronik.store import open_store

__all__ = ["cluster", "status"]

cluster = typer.Typer(help="Cluster membership: the chronik nodes.", no_args_is_help=True)


async def _view(
    store: str | None,
    forget_after: float,
    nats: str | None = None,
    bucket: str = "chronik_members",
    config: Path | None = None,
) -> MembershipView:
    if nats is None and config is not None:  # the backend the node's configuration names
        from chronik.server.config import load_config, resolve_store

        loaded = load_config(config)
        section = loaded.cluster  # not .check(): this shell need not hold the cluster secret
        if section.backend not in BACKENDS:
            raise ValidationError(
                f"invalid cluster.backend {section.backend!r}: expected store or nats",
                field="cluster.backend",
            )
        if section.backend == "nats":
            nats, bucket = section.nats_server(loaded.transport or None), section.nats_bucket
        else:
            store = resolve_store(store, loaded)
    if nats is not None:
        from chronik.cluster.nats_backend import NatsMembershipBackend

        async with NatsMembershipBackend(nats, bucket) as backend:
            return await read_view(backend, forget_after=forget_after)
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
    nats: str | None = typer.Option(
        None, "--nats", help="read the members of a NATS KV bucket (nats://host:port)"
    ),
    bucket: str = typer.Option("chronik_members", "--bucket", help="the KV bucket (--nats)"),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="a chronik.yaml: read where its cluster.backend says"
    ),
) -> None:
    """The members: id, addresses, version, alive or gone (and when last seen), load, parts."""
    view = run(lambda: _view(store, forget_after, nats, bucket, config))
    if as_json:
        print_json_lines([view.to_json()])
        return
    out = console()
    if not view.members:
        where = "NATS bucket" if nats is not None else "store"
        out.print(f"no member: no node runs with cluster.enabled on this {where}", highlight=False)
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
