"""Running the store's Lua scripts: EVALSHA by the script's SHA1, loading it once when the
server does not know it (a new or restarted server, ``SCRIPT FLUSH``) and calling again."""

from __future__ import annotations

import hashlib
from typing import Any

import redis.asyncio
import redis.exceptions

__all__ = ["Script", "command"]


async def command(client: redis.asyncio.Redis, *args: Any) -> Any:
    """The reply to one command (the driver's ``execute_command``, typed)."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


class Script:
    """One Lua script of the store, called by its SHA1."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: redis.asyncio.Redis, args: list[Any]) -> Any:
        """The script's reply for ``args`` (after the prefix, which ``args`` starts with)."""
        try:
            return await command(client, "EVALSHA", self.sha, 0, *args)
        except redis.exceptions.NoScriptError:
            loaded = await command(client, "SCRIPT", "LOAD", self.source)
            if isinstance(loaded, bytes):
                loaded = loaded.decode()
            if loaded != self.sha:  # pragma: no cover - the server hashes as we do
                raise redis.exceptions.ResponseError(
                    f"script {self.name} loaded as {loaded}"
                ) from None
            return await command(client, "EVALSHA", self.sha, 0, *args)

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:12]}>"
