"""``Membership``: one node's registration in the cluster, its heartbeat and its view of the
others.

A node joins with a stable id (given, or generated), the addresses others reach it at, its
chronik version and start time; it renews its lease every ttl/3 with what it runs now (parts)
and its load, and leaves on shutdown (the lease is released, the record says ``left``). A node
that dies without leaving (kill -9) stays in the live set until its lease expires by the
backend's clock, then shows as ``dead`` for ``forget_after`` seconds, then is pruned.

The view: ``await membership.view()`` reads every member and judges them by the backend clock
(the offset to it is learned from each renewal, so reading costs no write); ``changes()``
yields the view at once and again each time the live set's digest changes, polling at a
bounded interval. ``epoch`` counts the changes this process saw: monotonic, for a router to
tell a newer view from an older one; the ``digest`` is what nodes compare with each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

from chronik.cluster.backend import MembershipBackend
from chronik.cluster.config import (
    MAX_TTL,
    MIN_TTL,
    check_address,
    check_node_id,
    check_seconds,
    new_node_id,
)
from chronik.cluster.member import MemberInfo, MembershipView, live_digest
from chronik.cluster.store_backend import StoreMembershipBackend
from chronik.errors import ConfigurationError, LeaseHeld

if TYPE_CHECKING:
    from chronik.health import Supervisor
    from chronik.store.base import EventStore

__all__ = ["Membership", "read_view"]

log = logging.getLogger("chronik.cluster")
MIN_POLL: Final = 0.05
PRUNE_EVERY: Final = 10  # heartbeats between two prunes of long-gone records


def _local_us() -> int:
    return time.time_ns() // 1000


def _installed_version() -> str:
    """chronik's installed version (the package metadata), or "" when unknown."""
    try:
        return importlib.metadata.version("chronik")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _backend(target: EventStore | MembershipBackend) -> MembershipBackend:
    return target if isinstance(target, MembershipBackend) else StoreMembershipBackend(target)


async def read_view(
    target: EventStore | MembershipBackend, *, forget_after: float = 300.0
) -> MembershipView:
    """A one-off view of the members of a store (or backend), by its clock (epoch 0)."""
    check_seconds(forget_after, "forget_after", 0.0, 365 * 86400.0)
    found, now = await _backend(target).read(forget_after)
    return MembershipView(members=tuple(found), at=now / 1e6, digest=live_digest(found))


class Membership:
    """This node's membership: join, heartbeat every ttl/3, leave; the view of every member."""

    def __init__(
        self,
        target: EventStore | MembershipBackend,
        *,
        node_id: str | None = None,
        grpc: str = "",
        http: str = "",
        ttl: float = 10.0,
        forget_after: float = 300.0,
        poll_interval: float | None = None,
        health: Supervisor | None = None,
        parts: Callable[[], Iterable[str]] | None = None,
        load: Callable[[], Mapping[str, float]] | None = None,
        version: str | None = None,
    ) -> None:
        self.backend = _backend(target)
        self.node_id = check_node_id(node_id) if node_id is not None else new_node_id()
        self.grpc = check_address(grpc, "grpc")
        self.http = check_address(http, "http")
        self.ttl = check_seconds(ttl, "ttl", MIN_TTL, MAX_TTL)
        self.forget_after = check_seconds(forget_after, "forget_after", 0.0, 365 * 86400.0)
        poll = self.ttl / 3 if poll_interval is None else poll_interval
        self.poll_interval = check_seconds(poll, "poll_interval", MIN_POLL, MAX_TTL)
        self.health = health
        self.version = version if version is not None else _installed_version()
        self._parts = parts
        self._load = load
        self.started_at = time.time()
        self.incarnation = _local_us()
        self.joined = False
        self.epoch = 0
        self.current: MembershipView | None = None
        self._offset_us = 0  # backend clock minus this machine's, learned from renewals
        self._beats = 0
        self._task: asyncio.Task[None] | None = None
        self._view_lock = asyncio.Lock()

    # --- what this node publishes -----------------------------------------------------------

    def info(self) -> MemberInfo:
        """This node's record now: addresses, version, parts and load."""
        parts: tuple[str, ...] = ()
        load: dict[str, float] = {}
        if self._parts is not None:
            parts = tuple(sorted(set(self._parts())))
        if self.health is not None:
            load["loop_lag_s"] = round(self.health.loop_lag, 4)
        if self._load is not None:
            load.update({k: float(v) for k, v in self._load().items()})
        return MemberInfo(
            node_id=self.node_id,
            grpc=self.grpc,
            http=self.http,
            version=self.version,
            started_at=self.started_at,
            incarnation=self.incarnation,
            parts=parts,
            load=load,
            ttl=self.ttl,
        )

    def now_us(self) -> int:
        """The backend clock as this node last learned it (microseconds since the epoch)."""
        return _local_us() + self._offset_us

    # --- lifecycle ------------------------------------------------------------------------

    async def join(self) -> None:
        """Register; while a live node holds the same id, retry for up to 1.5 ttl (its lease
        may be a previous run's, killed), then ConfigurationError."""
        deadline = time.monotonic() + 1.5 * self.ttl
        while True:
            try:
                await self.heartbeat()
                break
            except LeaseHeld:
                if time.monotonic() >= deadline:
                    raise ConfigurationError(
                        f"cluster node id {self.node_id!r} is held by another live node: give "
                        "each node its own cluster.node_id"
                    ) from None
                await asyncio.sleep(self.ttl / 3)
        self.joined = True
        log.info("cluster: %s joined (grpc %s, http %s)", self.node_id, self.grpc, self.http)
        await self.view()

    async def heartbeat(self) -> None:
        """Renew the lease and the record once; learn the backend clock from it."""
        before = _local_us()
        db_now = await self.backend.heartbeat(self.info())
        after = _local_us()
        self._offset_us = db_now - (before + after) // 2
        self._beats += 1

    async def run(self) -> None:
        """Join if needed, then heartbeat every ttl/3 and refresh the view until cancelled; a
        failing round raises (run it under a supervisor, which restarts it with backoff)."""
        if not self.joined:
            await self.join()
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self.heartbeat()
            await self.view()
            if self._beats % PRUNE_EVERY == 0:
                with contextlib.suppress(Exception):  # another node prunes next time
                    await self.backend.prune(self.forget_after, self.now_us())

    async def leave(self) -> None:
        """Release the lease: the others see this node gone at their next read."""
        if not self.joined:
            return
        self.joined = False
        await self.backend.leave(self.info(), self.now_us())
        log.info("cluster: %s left", self.node_id)

    async def start(self) -> None:
        """Join, then heartbeat in a background task of this object's own."""
        await self.join()
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"chronik cluster {self.node_id}")

    async def stop(self) -> None:
        """Stop the heartbeat and leave."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # a round that failed as it was stopped (a read timing
                # out as the cancellation came): stopping goes on and the node still leaves
                log.warning("cluster: %s stopped during a failing round: %r", self.node_id, exc)
        await self.leave()

    async def __aenter__(self) -> Membership:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- the view -------------------------------------------------------------------------

    async def view(self) -> MembershipView:
        """Every member now by the backend clock; ``epoch`` grows when the live set changed."""
        async with self._view_lock:
            now = self.now_us() if self._beats else None  # before joining: ask the backend
            found, at = await self.backend.read(self.forget_after, now)
            digest = live_digest(found)
            if self.current is None or self.current.digest != digest:
                self.epoch += 1
            self.current = MembershipView(
                members=tuple(found), at=at / 1e6, digest=digest, epoch=self.epoch
            )
            return self.current

    async def changes(self, interval: float | None = None) -> AsyncIterator[MembershipView]:
        """The view now, then each new one whose live set differs, polling every ``interval``
        seconds (default: the poll interval; at least 0.05 s, at most the ttl)."""
        every = self.poll_interval if interval is None else interval
        every = min(check_seconds(every, "interval", MIN_POLL, MAX_TTL), self.ttl)
        seen: str | None = None
        while True:
            current = await self.view()
            if current.digest != seen:
                seen = current.digest
                yield current
            await asyncio.sleep(every)

    def __repr__(self) -> str:
        state = "joined" if self.joined else "not joined"
        return f"<Membership {self.node_id} {state} epoch {self.epoch} via {self.backend!r}>"
