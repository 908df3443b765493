"""`chronik serve`: the gRPC server over a store, with the domains from a config file."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from chronik.cli.common import fail, use_app_dir

if TYPE_CHECKING:
    from chronik.server.http_server import HttpServer

__all__ = ["run_server", "serve"]


def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="chronik.yaml"),
    store: str | None = typer.Option(None, "--store", help="store URL (or CHRONIK_STORE)"),
    host: str | None = typer.Option(None, "--host", help="gRPC host (default 127.0.0.1)"),
    port: int | None = typer.Option(None, "--port", help="gRPC port (default 50051)"),
    http_port: int | None = typer.Option(None, "--http-port", help="HTTP port (default 8080)"),
    grace: float = typer.Option(10.0, "--grace", help="seconds in-flight calls get on stop"),
    app_dir: Path = typer.Option(
        Path("."),
        "--app-dir",
        help="where the config's modules are: put first on sys.path (default: the "
        "working directory, as with python -m)",
    ),
) -> None:
    """Serve commands and events over gRPC until SIGTERM or Ctrl-C."""
    try:
        use_app_dir(app_dir)
        asyncio.run(run_server(config, store, host, port, grace, http_port))
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as err:  # bad config, port taken, store down, app import error
        raise fail(err) from None


async def run_server(
    config_path: Path | None,
    store_flag: str | None,
    host: str | None,
    port: int | None,
    grace: float,
    http_port: int | None = None,
) -> None:
    """Build the app from the configuration, serve it, stop cleanly on SIGTERM / SIGINT."""
    from chronik.server.auth import Auth
    from chronik.server.config import (
        build_app,
        build_projections,
        load_config,
        resolve_store,
        setup_observability,
    )
    from chronik.server.grpc import GrpcServer
    from chronik.server.limits import Limiter

    config = load_config(config_path)
    if config.http.enabled and config.http.tls is not None:  # refused before anything starts
        config.http.tls.check("http.tls")
    if config.cluster.enabled:
        config.cluster.check()
    config.retention.check()  # a bad retention section fails before anything starts
    config.projection_leases.check()
    config.tenancy.check(bool(config.auth.api_keys) or config.auth.jwt is not None)
    limiter = Limiter.from_config(config.limits, config.auth.api_keys)
    store = resolve_store(store_flag, config)
    app = build_app(config, store)
    if config.archive is not None:  # attached before anything serves (chronik.server.archiving)
        from chronik.server.archiving import open_archiving

        archiving = await open_archiving(config.archive, app)
    app.run_deadlines = False  # serve runs the scheduler for the app's sagas and its own
    setup_observability(config, app)
    server = GrpcServer(
        app,
        host=host or config.grpc.host,
        port=config.grpc.port if port is None else port,
        auth=Auth.from_config(config.auth.api_keys, config.tenancy),
        tenancy=config.tenancy,
        max_message_bytes=config.grpc.max_message_bytes,
        projections=build_projections(config, app),
        raw_append=config.grpc.raw_append,
        admin_writes=config.grpc.admin_writes,
        tls=config.grpc.tls,
        limiter=limiter if limiter.active else None,
        lease_ttl=config.projection_leases.lease_ttl,
        heartbeat=config.projection_leases.heartbeat,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload_tls(http))
    http: HttpServer | None = None
    receiver = None
    if config.cloudevents.receiver:  # before anything starts: a bad config fails fast
        from chronik.server.consumers import receiver_for

        receiver = receiver_for(config)
    try:
        bound = await server.start()  # binds, then starts the projections in the background
    except BaseException:
        await _bounded(server.stop(0), 5.0)
        raise
    found: dict[str, Any] = {}  # what the cluster record reports on (the outbox dispatcher)
    membership = None
    if config.cluster.enabled:
        from chronik.server.cluster import serve_membership

        membership = serve_membership(
            config.cluster, app, server, limiter, found, transport=config.transport or None
        )
    http_host = host or config.http.host
    http_hosts = (
        allowed_hosts(config.http.allowed_hosts, http_host) if config.http.enabled else None
    )
    docs_url: str | None = None
    if config.http.enabled:  # the HTTP stack is imported only when it serves
        http, docs_url = await _start_http(
            config, app, server, receiver, http_host, http_hosts, http_port, membership
        )
    print(f"chronik serving store {store}", flush=True)
    print(f"  domains: {', '.join(app.bus.domains) or '(none)'}", flush=True)
    runners = [r for r in (app.runner, server.runner) if r is not None]
    names = [name for r in runners for name in (*r.processors, *r.workers)]
    if names:
        print(f"  projections: {', '.join(names)}", flush=True)
    grpcs = "" if server.tls is None else "grpcs://"
    print(
        f"  gRPC:    {grpcs}{server.host}:{bound} "
        "(CommandGateway, EventStore, Catalog, Projections, health, reflection)",
        flush=True,
    )
    if server.tls is not None:
        print(f"  gRPC TLS: {_describe_tls(server.tls)}", flush=True)
    if http is not None:
        base = f"{http.scheme}://{http.host}:{http.port}"
        print(f"  HTTP:    {base}/v1 (OpenAPI at /openapi.json)", flush=True)
        print(f"  admin:   {base}/admin", flush=True)
        if docs_url is not None:
            print(f"  docs:    {base}{docs_url}", flush=True)
        if http.tls is not None:
            print(f"  HTTP TLS: {_describe_tls(http.tls)}", flush=True)
        if not server.auth and config.auth.jwt is None and http_hosts is None:
            print(
                f"  warning: HTTP listens on {http.host} with no auth and any Host name: "
                "configure auth (and http.allowed_hosts) before exposing it",
                flush=True,
            )
    if limiter.active:
        print(f"  limits:  {_describe_limits(config)}", flush=True)
    background = await _start_background(config, app, server, receiver, found)
    if config.retention.scavenger.enabled:  # the leased scavenger (chronik.server.retention)
        from chronik.server.retention import start_scavenger

        background.insert(0, start_scavenger(config.retention, app)[1])
        print(f"  scavenger: every {config.retention.scavenger.interval}", flush=True)
    if config.archive is not None:  # the leased archiver
        background.insert(0, archiving.start())
        print(f"  archive: {config.archive.url}", flush=True)
    if membership is not None:
        from chronik.server.cluster import join_cluster

        background.insert(0, await join_cluster(config.cluster, app, membership, http))
    await stop.wait()
    print("stopping: letting in-flight calls finish", flush=True)
    _exit_after(grace + SHUTDOWN_MARGIN)
    app.health.stopping("http server")
    end = loop.time() + grace  # one grace period for all the steps, not one each
    for stop_one in background:
        try:
            await asyncio.wait_for(stop_one(), max(0.1, end - loop.time()))
        except Exception as exc:  # never let one part hold the shutdown
            print(f"  {stop_one.__qualname__} did not stop cleanly: {exc!r}", flush=True)
    if http is not None:
        await _bounded(http.stop(), max(0.1, end - loop.time()))
    if server.runner is not None:  # a handler that never returns is cancelled after grace
        await server.runner.stop(max(0.1, end - loop.time()))
    await _bounded(server.stop(max(0.1, end - loop.time())), grace + 2.0)
    print("stopped", flush=True)


def _describe_tls(tls: Any) -> str:
    """One line about a server's TLS: its certificate and what it asks of clients."""
    clients = (
        "client certificates required"
        if tls.require_client_cert
        else "client certificates optional"
        if tls.client_ca
        else "no client certificates"
    )
    return f"certificate {tls.cert} ({clients}; reloaded on change / SIGHUP)"


def _describe_limits(config: Any) -> str:
    """One line about the node's limits."""
    limits = config.limits
    rated = sum(1 for k in config.auth.api_keys if k.get("rate") is not None)
    return (
        f"in-flight commands {limits.max_inflight_commands or 'unbounded'}, "
        f"subscriptions {limits.max_subscriptions or 'unbounded'}, "
        f"{rated} API keys with rates (then 429 / RESOURCE_EXHAUSTED)"
    )


def _reload_tls(http: HttpServer | None) -> None:
    """SIGHUP: load the HTTP server's TLS files again (gRPC follows its files by itself)."""
    if http is None or http.tls is None:
        return
    try:
        http.reload_tls()
    except Exception as exc:  # the previous certificate stays in use
        print(f"  TLS reload failed, keeping the previous certificate: {exc}", flush=True)
    else:
        print(f"  TLS reloaded from {http.tls.cert}", flush=True)


SHUTDOWN_MARGIN = 5.0  # seconds past the grace period after which the process just exits


def _exit_after(seconds: float) -> None:
    """Exit the process (code 1) if shutting down takes longer than ``seconds``: a wedged
    store writer or a task that ignores cancellation never holds the process."""

    def expire() -> None:
        print(f"error: shutdown took longer than {seconds:g} s; exiting", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


async def _bounded(step: Awaitable[None], seconds: float) -> None:
    """Run one shutdown step for at most ``seconds``; report what it raised or that it hung."""
    try:
        await asyncio.wait_for(step, seconds)
    except Exception as exc:
        print(f"  a shutdown step did not finish cleanly: {exc!r}", flush=True)


async def _start_http(
    config: Any,
    app: Any,
    server: Any,
    receiver: Any,
    http_host: str,
    http_hosts: list[str] | None,
    http_port: int | None,
    membership: Any = None,
) -> tuple[HttpServer, str | None]:
    """Serve HTTP (API, admin UI, docs, the CloudEvents receiver): the server and the docs URL."""
    from chronik.server.admin import create_admin_routes
    from chronik.server.http import LiveQuery, create_http_app
    from chronik.server.http_auth import HttpAuth
    from chronik.server.http_cluster import cluster_routes
    from chronik.server.http_server import HttpServer
    from chronik.server.metrics import Metrics

    keys = server.auth
    jwt_config = config.auth.jwt
    tenancy = config.tenancy
    http_auth = HttpAuth(keys, jwt_config, tenancy=tenancy) if keys or jwt_config else None
    docs = Path(config.http.docs_dir)
    docs_url = "/docs/" if (docs / "index.html").is_file() else None
    admin: list[Any] = create_admin_routes(
        app,
        runner=server.runner,
        auth=http_auth,
        docs_url=docs_url,
        transport=config.transport or None,  # its dead letters: opened per request
    )
    admin += cluster_routes(membership)  # GET /v1/cluster
    from chronik.server.http_retention import retention_routes

    admin += retention_routes(config.retention.defaults())  # deletes, retention, scavenge
    if docs_url is not None:  # the site `make docs` built: static, like the docs it is
        from starlette.routing import Mount
        from starlette.staticfiles import StaticFiles

        admin.append(Mount("/docs", StaticFiles(directory=docs, html=True), name="docs"))
    if receiver is not None:
        from chronik.server.http_cloudevents import cloudevents_routes

        admin += cloudevents_routes(receiver)
    metrics = Metrics()
    metrics.grpc_subscriptions = lambda: server.subscriptions
    http_app = create_http_app(
        app,
        metrics=metrics,
        runner=server.runner,
        queries=[
            LiveQuery(q.name, q.projection, q.table, tuple(q.params), tuple(q.order_by))
            for q in config.queries
        ],
        auth=http_auth,
        max_body_bytes=config.http.max_body_bytes,
        extra_routes=admin,
        allowed_hosts=http_hosts,
        admin_writes=config.http.admin_writes,
        raw_append=config.http.raw_append,
        limiter=server.limiter,
    )
    http = HttpServer(
        http_app,
        http_host,
        config.http.port if http_port is None else http_port,
        tls=config.http.tls,
    )
    try:
        await http.start()
    except BaseException:
        await _bounded(server.stop(0), 5.0)
        raise
    if http.task is not None:
        app.health.watch("http server", http.task)
    return http, docs_url


def allowed_hosts(configured: list[str] | None, bound: str) -> list[str] | None:
    """The Host header names HTTP serves: as configured, else the loopback names when bound
    to loopback (no other site can then reach the server through a rebound DNS name)."""
    from chronik.server.http import LOOPBACK_HOSTS

    if configured is not None:
        return configured
    name = bound.lower().strip("[]")
    return [*LOOPBACK_HOSTS, name] if name in LOOPBACK_HOSTS or name.startswith("127.") else None


async def _start_background(
    config: Any, app: Any, server: Any, receiver: Any = None, found: dict[str, Any] | None = None
) -> list[Any]:
    """The outbox dispatcher (with a transport), the deadline scheduler (with sagas) and the
    transport consumers (with the CloudEvents receiver they feed)."""
    from chronik.deadlines import DeadlineScheduler
    from chronik.outbox import OutboxDispatcher
    from chronik.sagas import Saga

    stops: list[Any] = []
    health = app.health
    if config.transport and config.outbox.enabled:
        from chronik.transports import open_transport

        transport = await open_transport(config.transport).open()
        dispatcher = OutboxDispatcher(
            app.store,
            transport,
            batch_size=config.outbox.batch_size,
            lease_ttl=config.outbox.lease_ttl,
        )

        health.supervise("outbox dispatcher", dispatcher.run)
        if found is not None:  # the cluster record says whether it holds the outbox lease
            found["outbox"] = dispatcher

        async def stop_outbox() -> None:
            await health.stop_task("outbox dispatcher")
            await dispatcher.stop()  # gives the lease up

        stops += [stop_outbox, transport.close]
        print(f"  outbox:  publishing to {transport.url}", flush=True)
    runners = [r for r in (server.runner, app.runner) if r is not None]
    processors = [p for r in runners for p in r.processors.values()]
    sagas = [s for p in processors if isinstance(s := getattr(p.projection, "saga", None), Saga)]
    if server.runner is not None:  # the chronik_deadlines projection is always there
        scheduler = DeadlineScheduler(app.store, sagas)
        health.supervise("deadline scheduler", scheduler.run)
        if found is not None:  # the cluster record says which deadline leases it holds
            found["deadlines"] = scheduler

        async def stop_scheduler() -> None:
            await health.stop_task("deadline scheduler")

        stops.append(stop_scheduler)
    if config.consumers.subscriptions:
        from chronik.server.consumers import describe, start_consumers

        stops.insert(0, await start_consumers(config, app.store, receiver))
        print(f"  consumers: {describe(config)}", flush=True)
        if receiver is not None:
            print("  cloudevents: receiving at POST /v1/cloudevents[/{topic}]", flush=True)
    return stops
