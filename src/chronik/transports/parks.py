"""Parked keys shared by the consumers of a group (failure policy ``park``).

A consumer whose policy parks a key dead-letters the key's later messages while it runs. With
competing consumers, those later messages may reach another consumer of the group, so the park
is recorded where every consumer of the group sees it, before the failed message is acked (so
before the key's next message can be handed out anywhere): ``Parks.park``; a consumer with
policy ``park`` asks ``Parks.parked`` before it hands a keyed message to its handler. A park
holds while its consumer runs: ``close`` (the consumer stopped) removes it, and a crashed
consumer's parks lapse after a lease that the running consumer keeps renewing.

Where the broker itself gives a key to one consumer at a time for as long as it runs (RabbitMQ:
a single active consumer per partition), the consumer's own memory is enough and ``open_parks``
returns None. Memory keeps parks beside the group's queue; PostgreSQL in ``transport_parks``
(``chronik.transports.postgres_parks``); NATS in a JetStream key-value bucket
(``chronik.transports.nats_parks``); those modules are imported by scheme, only when used.
Imports ``chronik.transports.source``'s layer only (nothing of an adapter).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import importlib
import os
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chronik.transports.base import Transport

__all__ = ["LeasedParks", "MemoryParks", "Parks", "open_parks"]

#: scheme -> module with ``open_parks(transport, kind, name, group)`` (imported when used)
_MODULES = {
    "postgresql": "chronik.transports.postgres_parks",
    "nats": "chronik.transports.nats_parks",
}


class Parks(abc.ABC):
    """One consumer's view of its group's parked keys."""

    def __init__(self) -> None:
        self.owner = os.urandom(8).hex()  # this consumer
        self.mine: set[str] = set()

    @abc.abstractmethod
    async def park(self, key: str) -> None:
        """Record that this consumer parked ``key`` (raises TransportUnavailable)."""

    @abc.abstractmethod
    async def parked(self, key: str) -> bool:
        """True if a running consumer of the group parked ``key``."""

    async def close(self) -> None:  # noqa: B027 - optional
        """This consumer stopped: its parks end."""


class LeasedParks(Parks):
    """Parks kept by a broker under a lease of ``lease`` seconds, renewed while the consumer
    runs; subclasses write (``_put``), renew (``_renew``) and remove (``_remove``) them."""

    def __init__(self, lease: float) -> None:
        super().__init__()
        self.lease = lease
        self._renewer: asyncio.Task[None] | None = None

    async def park(self, key: str) -> None:
        await self._put(key)
        self.mine.add(key)
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            with contextlib.suppress(Exception):  # an outage: the next beat tries again
                await self._renew()

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(BaseException):
                await self._renewer
        if self.mine:
            with contextlib.suppress(Exception):  # else they lapse with their lease
                await asyncio.wait_for(self._remove(), 5)

    @abc.abstractmethod
    async def _put(self, key: str) -> None:
        """Write the park of ``key`` with a fresh lease."""

    @abc.abstractmethod
    async def _renew(self) -> None:
        """Renew the lease of every park in ``mine``."""

    @abc.abstractmethod
    async def _remove(self) -> None:
        """Remove every park in ``mine``."""


_memory: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()


class MemoryParks(Parks):
    """Parks beside the memory broker's queue of the group (key -> owner)."""

    def __init__(self, queue: Any) -> None:
        super().__init__()
        self.parks = _memory.setdefault(queue, {})

    async def park(self, key: str) -> None:
        self.parks[key] = self.owner
        self.mine.add(key)

    async def parked(self, key: str) -> bool:
        return key in self.parks

    async def close(self) -> None:
        for key in self.mine:
            if self.parks.get(key) == self.owner:
                del self.parks[key]


async def open_parks(transport: Transport, kind: str, name: str, group: str) -> Parks | None:
    """The group's parks for a consumer of ``transport``, or None where the consumer's own
    memory is enough (the broker gives each key to one consumer while it runs)."""
    if transport.scheme == "memory":
        broker = transport.broker  # type: ignore[attr-defined]
        return MemoryParks(broker.queue(kind, name, group))
    module = _MODULES.get(transport.scheme)
    if module is None:
        return None
    opener = importlib.import_module(module).open_parks
    parks: Parks = await opener(transport, kind, name, group)
    return parks
