"""Serve an ASGI app with uvicorn inside chronik's own event loop (chronik handles signals).

The server binds its socket itself before uvicorn starts, without SO_REUSEPORT, so a port that
another process holds is a typed ``PortInUse`` from ``start()`` (never uvicorn's SystemExit).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from chronik.errors import ConfigurationError, PortInUse
from chronik.server.tls import TlsConfig, reload_context, uvicorn_options

__all__ = ["HttpServer", "bind_socket"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # chronik serve owns SIGTERM / SIGINT
        yield


def bind_socket(what: str, host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not listening yet); PortInUse if the port is taken,
    ConfigurationError if the address cannot be used."""
    name = host.strip("[]")
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot listen on {what} {host}:{port}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR (not SO_REUSEPORT): a restart may bind over TIME_WAIT connections, but
        # a second listener on the same port is refused
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(what, host, port) from None
        raise ConfigurationError(f"cannot listen on {what} {host}:{port}: {exc.strerror}") from None
    return sock


class HttpServer:
    """``await start()`` binds (``port=0``: any free port) and serves; ``await stop()``.

    With ``tls`` it serves HTTPS only; ``reload_tls()`` loads the certificate files again into
    the serving context (uvicorn cannot swap it otherwise; ``chronik serve`` does it on SIGHUP).
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 8080, tls: TlsConfig | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.tls = None if tls is None else tls.check("http.tls")
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            **uvicorn_options(self.tls),
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start serving; returns the bound port. PortInUse if another process holds it."""
        sock = bind_socket("HTTP", self.host, self.port)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        try:
            while not self._server.started:
                if self._task.done():
                    break
                await asyncio.sleep(0.01)
        finally:
            if not self._server.started:
                sock.close()
        if not self._server.started:
            try:
                self._task.result()
            except (Exception, SystemExit) as exc:  # uvicorn exits when startup fails
                raise ConfigurationError(
                    f"HTTP server on {self.host}:{self.port} could not start: {exc!r}"
                ) from None
            finally:
                self._task = None
            raise ConfigurationError(f"HTTP server on {self.host}:{self.port} did not start")
        sockets = self._server.servers[0].sockets
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    @property
    def scheme(self) -> str:
        """``https`` with TLS, else ``http``."""
        return "http" if self.tls is None else "https"

    def reload_tls(self) -> None:
        """Load the TLS files again (new connections use them); ConfigurationError naming the
        field if they do not load, the previous ones staying in use."""
        context = getattr(self._server.config, "ssl", None)  # set by uvicorn when it starts
        if self.tls is None or context is None:
            return
        reload_context(context, self.tls)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task serving requests while started (for a health supervisor to watch)."""
        return self._task

    async def stop(self) -> None:
        """Stop accepting, finish open requests, close streaming responses."""
        if self._task is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True  # do not wait forever for SSE streams
        await self._task
        self._task = None
