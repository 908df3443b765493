"""Per-stream locks of the command bus: in-process always, durable for domains that opt in.

Every command holds its stream's in-process lock while it is loaded, decided and appended,
so one bus never races itself. A command that finds its stream free (nobody holds or waits for
it, no durable lock) takes it at once without a lock object (``StreamLocks.take``); an
``asyncio.Lock`` is made only when a second command comes for the stream (``StreamLocks.hold``)
and is then taken on behalf of the first one. An entry lives while a command holds or waits
for its stream. A domain registered with a ``DurableLock`` (opt-in,
e.g. ``app.add_aggregate(Order, lock=chronik.DurableLock(ttl=30, wait=10))``) also holds a
lease on its aggregate in the store (``chronik.store.leases``), so commands on one aggregate
queue across buses and processes that share the store, on every adapter with leases (memory,
SQLite, PostgreSQL). It is for logic that must not run twice for one command (a slow call to
the outside world in ``decide``); optimistic concurrency stays the authority: the append still
carries the loaded version, and a holder that lost its lease can never append over another's
events.

The lease:

* key: one lease name, ``chronik.aggregate-lock``, and a partition that is a stable 63-bit
  hash (BLAKE2b) of the stream's text ``tenant:domain/aggregate_id`` (``lock_key``). Lease
  names hold 1..256 printable characters and a stream's text can reach 386, so no readable
  name fits every id; a fixed-size key fits all, and one name lets the sweep select rows by
  the leading column of the table's primary key. Two streams sharing a partition (a 2**-63
  chance per pair) only queue behind each other: never two holders at once;
* owner: unique per acquisition (host, pid, random), so a release or the sweep can never
  touch a later holder's lease;
* waiting: a held lease is tried again with jittered backoff (2 ms growing to 100 ms) until
  ``wait`` seconds have passed, then ``LockTimeout`` (a ConcurrencyError: HTTP 409, gRPC
  ABORTED) and the command does not run;
* fresh state: once the lease is taken the bus drops its cached state of the stream (another
  process may have written since), so the command loads the latest version and is decided
  once, not again after a conflict;
* renewal: while the command runs a task owned by the hold renews the lease every ttl/3; a
  renewal that finds the lease taken (or lapsed and taken again) logs a warning;
* release: on every exit (result, rejection, exception, cancellation), after the renewal task
  finished. A holder killed with kill -9 releases nothing: its lease expires after ``ttl`` and
  the next waiter takes it over (the epoch grows). Rows of released and expired locks are
  deleted by ``chronik.aggregate_lock_sweep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import msgspec

from chronik.dcb_decider import DcbDecider
from chronik.domain_model import DomainModel
from chronik.errors import ConfigurationError, LeaseHeld, LockTimeout
from chronik.messages import StreamId

if TYPE_CHECKING:
    from chronik.store.base import EventStore

__all__ = ["LOCK_NAME", "DurableHold", "DurableLock", "StreamLocks", "lock_key", "new_owner"]

log = logging.getLogger("chronik.locks")

#: the lease name every durable aggregate lock uses (the partition is the aggregate's hash)
LOCK_NAME: Final = "chronik.aggregate-lock"
_MAX_TTL: Final = 86400.0
_FIRST_DELAY: Final = 0.002
_MAX_DELAY: Final = 0.1
_HOST: Final = (socket.gethostname() or "host")[:64]
#: cleanups still running after their caller was cancelled (kept from garbage collection)
_BACKGROUND: set[asyncio.Task[Any]] = set()


class DurableLock(msgspec.Struct, frozen=True):
    """Hold a lease on each aggregate of a domain while one of its commands runs.

    ``ttl``: seconds the lease lasts unless renewed (the holder renews every ttl/3; a holder
    that died is taken over after it); ``wait``: seconds a command waits for another holder
    before ``LockTimeout``.
    """

    ttl: float = 30.0
    wait: float = 10.0

    def __post_init__(self) -> None:
        ttl, wait = self.ttl, self.wait
        if type(ttl) not in (int, float) or not math.isfinite(ttl) or not 0.05 <= ttl <= _MAX_TTL:
            raise ConfigurationError(
                f"DurableLock.ttl must be a number of seconds in 0.05..{_MAX_TTL:g}, not {ttl!r}"
            )
        if type(wait) not in (int, float) or not math.isfinite(wait) or not 0 <= wait <= _MAX_TTL:
            raise ConfigurationError(
                f"DurableLock.wait must be a number of seconds in 0..{_MAX_TTL:g}, not {wait!r}"
            )


def lock_key(stream: StreamId) -> tuple[str, int]:
    """The (lease name, partition) of ``stream``'s durable lock (stable across versions)."""
    digest = hashlib.blake2b(str(stream).encode(), digest_size=8).digest()
    return LOCK_NAME, int.from_bytes(digest, "big") >> 1


def new_owner(what: str = "lock") -> str:
    """A lease owner no other acquisition uses: ``what@host:pid:random``."""
    return f"{what}@{_HOST}:{os.getpid()}:{secrets.token_hex(8)}"


def background(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run a cleanup to its end even if its caller is cancelled (a reference is kept)."""
    task = asyncio.ensure_future(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


class DurableHold:
    """One held durable lock: acquired (waiting up to ``wait``), renewed, released once."""

    def __init__(self, store: EventStore, stream: StreamId, policy: DurableLock) -> None:
        self.store, self.stream, self.policy = store, stream, policy
        self.name, self.partition = lock_key(stream)
        self.owner = new_owner()
        self.epoch = 0  # 0: not held
        self._stopping = asyncio.Event()
        self._renewal: asyncio.Task[None] | None = None

    async def acquire(self) -> None:
        """Take the lease, waiting with backoff while another owner holds it; LockTimeout
        after ``wait`` s. A cancelled attempt still finishes and is then released."""
        deadline = time.monotonic() + self.policy.wait
        delay = _FIRST_DELAY
        while True:
            attempt = asyncio.ensure_future(self._try())
            try:
                epoch = await asyncio.shield(attempt)
            except BaseException:  # cancelled, or an unknown outcome: let go of what it took
                background(self._release_after(attempt))
                raise
            if epoch is not None:
                self.epoch = epoch
                self._renewal = asyncio.create_task(self._renew(), name=f"renew {self.stream}")
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(self.stream, self.policy.wait)
            await asyncio.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
            delay = min(_MAX_DELAY, delay * 2)

    async def _try(self) -> int | None:
        try:
            return await self.store.acquire_lease(
                self.name, self.owner, self.policy.ttl, self.partition
            )
        except LeaseHeld:
            return None

    async def _release_after(self, attempt: asyncio.Future[int | None]) -> None:
        with contextlib.suppress(Exception):  # failed: maybe nothing taken, release anyway
            await attempt
        await self._release_lease()

    async def _renew(self) -> None:
        """Renew every ttl/3 until released; warn once the lease was lost."""
        interval = self.policy.ttl / 3
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                epoch = await self.store.acquire_lease(
                    self.name, self.owner, self.policy.ttl, self.partition
                )
            except LeaseHeld:
                log.warning(
                    "the lock on %s expired and another holder took it while a command ran; "
                    "optimistic concurrency still guards the append",
                    self.stream,
                )
                return
            except Exception as exc:  # the store is down: try again at the next interval
                log.warning("renewing the lock on %s failed: %r", self.stream, exc)
                continue
            if epoch != self.epoch:
                log.warning(
                    "the lock on %s lapsed while a command ran (epoch %d, now %d); "
                    "optimistic concurrency still guards the append",
                    self.stream,
                    self.epoch,
                    epoch,
                )
                self.epoch = epoch

    async def release(self) -> None:
        """Stop renewing and give the lease up; runs to its end even if the caller is
        cancelled meanwhile."""
        await asyncio.shield(background(self._release()))

    async def _release(self) -> None:
        self._stopping.set()
        if self._renewal is not None:
            await asyncio.wait([self._renewal])  # a renewal in flight lands before the release
        await self._release_lease()

    async def _release_lease(self) -> None:
        try:
            await self.store.release_lease(self.name, self.owner, self.partition)
        except Exception as exc:
            log.warning("releasing the lock on %s failed (it expires): %r", self.stream, exc)
        self.epoch = 0

    def __repr__(self) -> str:
        state = f"epoch {self.epoch}" if self.epoch else "not held"
        return f"<DurableHold {self.stream} {state}>"


class _Entry:
    """A stream's in-process lock, how many dispatches hold or wait for it, and the durable
    hold of the one that holds it; ``async with`` it (``StreamLocks.hold``) once per user."""

    __slots__ = ("durable", "lock", "locks", "stream", "taker", "users")

    def __init__(self, locks: StreamLocks, stream: StreamId, taker: bool = False) -> None:
        self.locks, self.stream = locks, stream
        self.lock = asyncio.Lock()
        #: the stream was taken (``StreamLocks.take``) by a user counted here, whose hold of
        #: ``lock`` the next entering user acquires first
        self.taker = taker
        self.users = 1 if taker else 0
        self.durable: DurableHold | None = None

    async def __aenter__(self) -> None:
        if self.taker:  # a free lock, no waiters: acquired at once, for the one that took it
            self.taker = False
            await self.lock.acquire()
        try:
            await self.lock.acquire()
        except BaseException:
            self._leave(False)
            raise
        policy = self.locks.policies.get(self.stream.domain)
        if policy is None:
            return
        durable = DurableHold(self.locks.store, self.stream, policy)
        try:
            await durable.acquire()
        except BaseException:
            self._leave(True)
            raise
        self.durable = durable
        self.locks.forget(self.stream)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        durable, self.durable = self.durable, None
        try:
            if durable is not None:
                await durable.release()
        finally:
            self._leave(True)

    def _leave(self, locked: bool) -> None:
        if locked:
            self.lock.release()
        self.users -= 1
        if self.users == 0:
            del self.locks._entries[self.stream]


#: the entry of a stream taken by ``StreamLocks.take`` while nobody waits for it
_TAKEN: Final = _Entry.__new__(_Entry)


class StreamLocks:
    """The bus's per-stream locks; ``len()`` counts the streams held or waited for."""

    def __init__(
        self, store: EventStore, forget: Callable[[StreamId], object] = lambda stream: None
    ) -> None:
        self.store = store
        #: drops the bus's cached state of a stream: called each time a durable lock is taken,
        #: as another process may have written since (the command then loads afresh)
        self.forget = forget
        #: domain -> its durable lock policy (the domains that opted in)
        self.policies: dict[str, DurableLock] = {}
        #: the streams held or waited for: an entry, or _TAKEN (held by ``take``, no waiter)
        self._entries: dict[StreamId, _Entry] = {}

    def set(self, model: DomainModel, policy: DurableLock | None) -> None:
        """Hold ``policy``'s durable lock around each command of ``model`` (None: none)."""
        if policy is None:
            self.policies.pop(model.domain, None)
            return
        if not isinstance(policy, DurableLock):
            raise ConfigurationError(f"lock must be a chronik.DurableLock, not {policy!r}")
        if isinstance(model, DcbDecider):
            raise ConfigurationError(
                f"{model.domain}: a DcbDecider's consistency boundary is its query, not an "
                "aggregate; it cannot take a durable aggregate lock"
            )
        if not self.store.supports_tables:
            raise ConfigurationError(
                f"{model.domain}: durable locks need a store with leases, "
                f"and {type(self.store).__name__} has none"
            )
        self.policies[model.domain] = policy

    def hold(self, stream: StreamId) -> _Entry:
        """``async with locks.hold(stream):`` the stream's locks for one command (counted as
        a user of them from this call: enter it at once)."""
        entry = self._entries.get(stream)
        if entry is None or entry is _TAKEN:
            entry = self._entries[stream] = _Entry(self, stream, entry is _TAKEN)
        entry.users += 1
        return entry

    def take(self, stream: StreamId) -> bool:
        """Hold the stream's lock at once if nobody holds or waits for it and its domain has
        no durable lock (then ``give`` it back in a ``finally``); False: use ``hold``."""
        entries = self._entries
        if stream in entries or stream.domain in self.policies:
            return False
        entries[stream] = _TAKEN
        return True

    def give(self, stream: StreamId) -> None:
        """Release what ``take`` held (to the next waiter, if one came meanwhile)."""
        entry = self._entries[stream]
        if entry is _TAKEN:
            del self._entries[stream]
        else:  # a waiter made the entry, and acquired its lock for us when it entered
            entry._leave(not entry.taker)
            entry.taker = False

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<StreamLocks streams={len(self._entries)} durable={sorted(self.policies)}>"
