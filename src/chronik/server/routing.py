"""What the servers share about command routing by aggregate affinity, without gRPC: the
router an app has, the call a command came in on, and the routing counters as metrics.

- ``router_of(app)`` / ``set_router(app, router)``: the ``Routing`` of a Chronik app (set by
  ``chronik.server.forwarding.install_router``; None: every command is handled locally);
- ``incoming(deadline, forwarded)``: the call a command came in on, for the router below it
  in the same task: the caller's deadline (kept on the hop) and whether another node already
  forwarded it (then it is handled here: one hop, never more);
- ``RoutingStats``: the counters (forwarded, fallbacks, received, local);
- ``RoutingCollector``: those counters as Prometheus metrics (``Metrics.instrument``).
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from chronik.app import Chronik

__all__ = [
    "Incoming",
    "Routing",
    "RoutingCollector",
    "RoutingStats",
    "current_call",
    "incoming",
    "router_of",
    "set_router",
]


@dataclass
class RoutingStats:
    """How a node routed its commands since it started."""

    #: commands sent to their owner, which answered (with a result or an error)
    forwarded: int = 0
    #: commands whose owner was unreachable (UNAVAILABLE): handled here instead
    fallbacks: int = 0
    #: commands another node forwarded here (handled here, never forwarded again)
    received: int = 0
    #: commands this node owned (or that had no other owner): handled here
    local: int = 0

    def as_dict(self) -> dict[str, float]:
        """The counters as numbers (for the member's published load)."""
        return {
            "forwarded": float(self.forwarded),
            "forward_fallbacks": float(self.fallbacks),
            "forwarded_received": float(self.received),
        }


class Routing(Protocol):
    """What the servers ask of a router (``chronik.server.forwarding.CommandRouter``)."""

    stats: RoutingStats
    node_id: str

    def accept(self, metadata: Iterable[tuple[str, str | bytes]]) -> bool:
        """Whether the call is a command another node forwarded (with the cluster's
        credentials when auth is on; AuthenticationError if they are wrong)."""

    async def close(self) -> None:
        """Close the channels to the other members."""


_routers: weakref.WeakKeyDictionary[Any, Routing] = weakref.WeakKeyDictionary()


def router_of(app: Chronik) -> Routing | None:
    """The router installed on ``app`` (None: commands are handled where they arrive)."""
    return _routers.get(app)


def set_router(app: Chronik, router: Routing | None) -> None:
    """Install (or, with None, remove) the router of ``app``."""
    if router is None:
        _routers.pop(app, None)
    else:
        _routers[app] = router


@dataclass(frozen=True, slots=True)
class Incoming:
    """The call a command arrived on: its deadline (``time.monotonic()`` seconds, None for
    none) and whether another node forwarded it."""

    deadline: float | None
    forwarded: bool

    def remaining(self) -> float | None:
        """Seconds left before the caller's deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()


_incoming: ContextVar[Incoming | None] = ContextVar("chronik_incoming_call", default=None)


def current_call() -> Incoming | None:
    """The call the command being dispatched arrived on (None: not from a gateway call)."""
    return _incoming.get()


@contextlib.contextmanager
def incoming(remaining: float | None, forwarded: bool) -> Iterator[Incoming]:
    """Mark the dispatches inside the block as coming in on a call with ``remaining``
    seconds left (None: no deadline), forwarded by another node or not."""
    call = Incoming(None if remaining is None else time.monotonic() + remaining, forwarded)
    token = _incoming.set(call)
    try:
        yield call
    finally:
        _incoming.reset(token)


class RoutingCollector:
    """The routing counters of an app's router as Prometheus counters (none without one)."""

    def __init__(self, app: Chronik) -> None:
        self._app = weakref.ref(app)

    def collect(self) -> Iterable[Any]:
        """The ``chronik_routing_*`` counters, read at scrape time."""
        from prometheus_client.core import CounterMetricFamily

        app = self._app()
        router = None if app is None else router_of(app)
        if router is None:
            return
        stats = router.stats
        for name, help_text, value in (
            ("forwarded", "Commands forwarded to the owner of their aggregate", stats.forwarded),
            ("fallbacks", "Commands handled here: their owner was unreachable", stats.fallbacks),
            ("received", "Commands another node forwarded here", stats.received),
            ("local", "Commands handled here as their owner", stats.local),
        ):
            yield CounterMetricFamily(f"chronik_routing_{name}", help_text, value=value)
