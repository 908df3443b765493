"""Helpers of the transport conformance suite: a transport factory type, waits, a recording
handler and numbered messages.

Used by ``chronik.testing.transport_conformance`` and ``chronik.testing.transport_failures``,
and by adapter tests of their own. Imports pytest and ``chronik.transports`` only.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chronik.transports import Delivery, FailurePolicy, Message, Transport

__all__ = [
    "FAST",
    "WAIT",
    "Recorder",
    "TransportFactory",
    "eventually",
    "fresh_name",
    "msg",
]

TransportFactory = Callable[..., Awaitable[Transport]]
WAIT = 30.0
FAST = FailurePolicy(retries=2, backoff=0.01, backoff_max=0.05)
_names = itertools.count()
_run = os.urandom(3).hex()


async def eventually(check: Callable[[], bool], within: float = WAIT, what: str = "") -> None:
    """Wait until ``check()`` is true; fail the test after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.01)


class Recorder:
    """A handler that records what it got, optionally failing on chosen message ids."""

    def __init__(self, fail: Callable[[Delivery], bool] | None = None) -> None:
        self.got: list[Delivery] = []
        self.fail = fail

    async def __call__(self, delivery: Delivery) -> None:
        self.got.append(delivery)
        if self.fail is not None and self.fail(delivery):
            raise RuntimeError(f"handler refuses {delivery.id}")

    def ids(self) -> list[str]:
        return [d.id for d in self.got]

    def bodies(self) -> list[bytes]:
        return [d.body for d in self.got]


def msg(topic: str, n: int, **kw: Any) -> Message:
    """Message number ``n`` on ``topic`` (body ``b"<n>"``)."""
    return Message(topic=topic, body=str(n).encode(), **kw)


def fresh_name() -> str:
    """A topic/queue name no other test of this run uses."""
    return f"c{_run}.n{next(_names)}"
