"""Serve an ASGI app with uvicorn inside chronik's own event loop (chronik handles signals)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn

__all__ = ["HttpServer"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # chronik serve owns SIGTERM / SIGINT
        yield


class HttpServer:
    """``await start()`` binds (``port=0``: any free port) and serves; ``await stop()``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start serving; returns the bound port."""
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
                raise OSError(f"cannot listen on {self.host}:{self.port}")
            await asyncio.sleep(0.01)
        sockets = self._server.servers[0].sockets
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop accepting, finish open requests, close streaming responses."""
        if self._task is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True  # do not wait forever for SSE streams
        await self._task
        self._task = None
