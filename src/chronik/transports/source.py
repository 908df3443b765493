"""The adapter side of the transport port: ``Source``, one consumer's feed of ``Incoming``.

Each adapter implements ``Source`` (fetch, ack, release, touch, close); the shared consumer loop
in ``chronik.transports.consumer`` runs on it, so this module is all the consumer needs of an
adapter. It imports only ``chronik.transports.message``.
"""

from __future__ import annotations

import abc
from typing import Any

import msgspec

from chronik.transports.message import Message

__all__ = ["Incoming", "Source"]


class Incoming(msgspec.Struct):
    """A delivery as an adapter hands it over: the message, the broker's delivery count and
    the adapter's own handle for acking it."""

    message: Message
    attempt: int
    token: Any = None


class Source(abc.ABC):
    """One consumer's connection to its group or queue (implemented by each adapter).

    ``touch_interval``: seconds between ``touch`` calls for a message whose handler is still
    running (None: the broker never takes a message back from a live consumer).
    """

    touch_interval: float | None = None

    @abc.abstractmethod
    async def fetch(self, limit: int, wait: float) -> list[Incoming]:
        """Up to ``limit`` deliveries, waiting at most ``wait`` seconds for the first one.

        Raises TransportUnavailable while the broker is unreachable (the consumer retries).
        """

    @abc.abstractmethod
    async def ack(self, incoming: Incoming) -> None:
        """Acknowledge: the message is done for this group."""

    @abc.abstractmethod
    async def release(self, incoming: Incoming) -> None:
        """Give the message back for redelivery (at once, without penalty)."""

    async def touch(self, incoming: Incoming) -> None:  # noqa: B027 - optional
        """Tell the broker the message is still being worked on (long retries)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop fetching; unacknowledged deliveries go back to the broker."""
