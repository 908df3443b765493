"""Browser fixtures: Debian's chromium driven by Playwright, and a real chronik server (gRPC +
HTTP with the admin UI, the shop on a fresh store) running in a thread of its own.

Chromium is installed with apt-get when /usr/bin/chromium is missing; if that is impossible the
UI tests are skipped, or fail under CHRONIK_REQUIRE_SERVICES=1. Never `playwright install`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from chronik.app import Chronik
from chronik.deadlines import aggregate_deadlines
from chronik.projections import Projection
from chronik.server.admin import create_admin_routes
from chronik.server.grpc import GrpcServer
from chronik.server.http import create_http_app
from chronik.server.http_auth import HttpAuth
from chronik.server.http_server import HttpServer
from chronik.testing.services import ServiceNotStarted, apt_install, unavailable
from examples.shop.app import build_app, projections

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's chromium, installed with apt-get if it is missing."""
    if not os.path.exists(CHROMIUM):
        try:
            apt_install(["chromium"])
        except (ServiceNotStarted, OSError) as exc:
            unavailable(f"chromium unavailable: {exc}")
    if not os.path.exists(CHROMIUM):
        unavailable("chromium unavailable: apt-get did not install /usr/bin/chromium")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """One headless chromium per test module (Playwright's sync API holds an event loop in
    this thread while it runs: async tests of later modules need it gone)."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        unavailable(f"playwright unavailable: {exc} (pip install playwright)")
    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=chromium, args=ARGS)
        except Error as exc:
            unavailable(f"chromium does not start: {exc}")
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context and page; `shot(name)` saves a screenshot under artifacts/."""
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    ARTIFACTS.mkdir(exist_ok=True)

    def shot(name: str) -> None:
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{name}.png"), full_page=True)

    pg.shot = shot
    yield pg
    context.close()
    assert not errors, f"JavaScript errors or CSP violations on the page: {errors}"


class ServerThread:
    """The shop served over gRPC and HTTP (with /admin) by a loop in its own thread, with the
    projections `chronik serve` runs (plus `extra`)."""

    def __init__(
        self,
        store: str,
        extra: Callable[[Chronik], Sequence[Projection]] = lambda app: (),
        auth: HttpAuth | None = None,
    ) -> None:
        self.store, self.extra, self.auth = store, extra, auth
        self.url = ""
        self.app: Chronik | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="chronik-ui-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = self.app = build_app(self.store)
        found = [*projections(app), *self.extra(app), aggregate_deadlines(app.dispatch)]
        grpc = GrpcServer(app, port=0, projections=found)
        await grpc.start()
        routes = create_admin_routes(app, runner=grpc.runner, auth=self.auth)
        http = HttpServer(
            create_http_app(
                app, runner=grpc.runner, auth=self.auth, extra_routes=routes, admin_writes=True
            ),
            port=0,
        )
        await http.start()
        self.url = f"http://127.0.0.1:{http.port}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await http.stop()
            await grpc.stop(1.0)

    def start(self) -> ServerThread:
        """Start serving; returns once the HTTP port is bound."""
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the server did not start: {self._error!r}")
        return self

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        """Stop the servers and the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def command(
    http: httpx.Client,
    domain: str,
    aggregate_id: str,
    type_: str,
    wait: bool = True,
    **payload: Any,
) -> dict[str, Any]:
    """Send a command over the HTTP API; its result (once the projections have it: `wait`)."""
    body = {"domain": domain, "aggregate_id": aggregate_id, "type": type_, "payload": payload}
    r = http.post("/v1/commands" + ("?wait=projections" if wait else ""), json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result
