"""The scavenger: removes what retention rules and deletes let go, physically, in bounded batches.

``scavenge(store, defaults)`` walks the streams that hold events, works out for each the
sequence its retention allows it to start at (``chronik.store.retention``: its truncation point,
then ``max_count`` and ``max_age``, each rule the stream's own or else its domain's default),
and removes the events before it in short transactions of at most ``batch_size`` events
(``store.scavenge_stream``); ``dry_run=True`` changes nothing and reports what would go. The
``Scavenger`` runs it in the background every ``interval`` seconds while it holds the store's
``chronik.scavenger`` lease (one runner per store, whichever process has it), with its state for
health checks. A stream that fails is reported and skipped; the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import msgspec

from chronik.errors import LeaseHeld, ValidationError
from chronik.lifecycle.archive_scavenge import ArchivePrune
from chronik.messages import StreamId
from chronik.store.base import EventStore
from chronik.store.retention import Retention, StreamRetention
from chronik.store.tenant_reads import check_tenant_filter

__all__ = [
    "LEASE",
    "ScavengeProgress",
    "ScavengeReport",
    "Scavenger",
    "default_for",
    "scavenge",
]

LEASE: Final = "chronik.scavenger"
_PAGE: Final = 500
_MAX_LISTED: Final = 1000
_log = logging.getLogger("chronik.scavenger")
_RUNNING: dict[int, Scavenger] = {}  # id(store) -> the scavenger running on it here


class ScavengeProgress(msgspec.Struct):
    """How far a run is: streams looked at, and what went (or would go) so far."""

    scanned: int = 0
    streams: int = 0
    events: int = 0
    bytes: int = 0


class ScavengeReport(msgspec.Struct):
    """What a run removed (``dry_run``: would remove): streams that lost events, events, bytes
    of payload and metadata; ``removed`` lists the streams (the first 1000), ``errors`` the
    streams that failed (with why)."""

    dry_run: bool
    started_at: float
    finished_at: float = 0.0
    scanned: int = 0
    streams: int = 0
    events: int = 0
    bytes: int = 0
    removed: list[tuple[str, int, int]] = msgspec.field(default_factory=list)
    errors: list[tuple[str, str]] = msgspec.field(default_factory=list)
    #: archived events removed (would be, ``dry_run``) with the store's attached archive
    archived: int = 0


def check_defaults(defaults: Mapping[str, Retention] | None) -> dict[str, Retention]:
    """The default rules, checked (ValidationError naming the key): keyed by domain, by
    ``tenant:domain`` (that tenant's streams of the domain) or ``tenant:*`` (every stream of
    the tenant); the most specific applies (``default_for``)."""
    out: dict[str, Retention] = {}
    for domain, rules in (defaults or {}).items():
        if not isinstance(domain, str) or not isinstance(rules, Retention):
            raise ValidationError(
                f"invalid retention default {domain!r}: {rules!r}", field="domains"
            )
        if ":" in domain:
            check_tenant_filter(domain.partition(":")[0])
        if rules.truncate_before is not None:
            raise ValidationError(
                f"retention of domain {domain!r}: truncate_before is per stream",
                field="truncate_before",
            )
        out[domain] = rules
    return out


def default_for(rules: Mapping[str, Retention], stream: StreamId) -> Retention | None:
    """The default rules of ``stream``: its tenant's for its domain, its tenant's for every
    domain, else its domain's."""
    if stream.tenant:
        found = rules.get(f"{stream.tenant}:{stream.domain}") or rules.get(f"{stream.tenant}:*")
        if found is not None:
            return found
    return rules.get(stream.domain)


async def target(
    store: EventStore, info: StreamRetention, default: Retention | None, now_us: int
) -> int:
    """The first sequence ``info``'s stream may keep under its rules (and its domain's)."""
    rules = info.retention.over(default)
    before = info.truncate_before
    if rules.max_count is not None:
        before = max(before, info.version + 1 - rules.max_count)
    if rules.max_age is not None:
        cutoff = now_us - int(rules.max_age * 1_000_000)
        since = await store.first_sequence_since(info.stream, cutoff)
        before = max(before, info.version + 1 if since is None else since)
    return before


async def scavenge(
    store: EventStore,
    defaults: Mapping[str, Retention] | None = None,
    *,
    dry_run: bool = False,
    batch_size: int = 500,
    now_us: int | None = None,
    on_batch: Callable[[ScavengeProgress], Awaitable[None]] | None = None,
) -> ScavengeReport:
    """Remove (``dry_run``: count) every stored event that retention and deletes let go.

    ``defaults`` maps a domain (or ``tenant:domain``, ``tenant:*``) to its default rules;
    ``now_us`` is the time ``max_age`` counts from (default: now). ``on_batch`` is awaited
    after each batch with the progress so far (the ``Scavenger`` renews its lease there; what
    it raises ends the run).
    """
    if type(batch_size) is not int or not 1 <= batch_size <= 100_000:
        raise ValidationError(f"batch_size must be 1..100000, got {batch_size!r}")
    rules = check_defaults(defaults)
    now = time.time_ns() // 1000 if now_us is None else now_us
    report = ScavengeReport(dry_run, time.time())
    progress = ScavengeProgress()
    cursor: int | None = None
    prune = await ArchivePrune.start(store, now)  # None: no archive attached
    while True:
        page, cursor = await store.retention_page(cursor, _PAGE)
        for info in page:
            progress.scanned += 1
            try:
                events, size = await _one(store, info, rules, now, dry_run, batch_size, prune)
            except (LeaseHeld, asyncio.CancelledError):
                raise
            except Exception as exc:  # one stream's failure fails that stream alone
                _log.warning("scavenging %s failed: %r", info.stream, exc)
                report.errors.append((str(info.stream), f"{type(exc).__name__}: {exc}"))
                continue
            if events:
                progress.streams += 1
                progress.events += events
                progress.bytes += size
                if len(report.removed) < _MAX_LISTED:
                    report.removed.append((str(info.stream), events, size))
                if on_batch is not None:
                    await on_batch(progress)
        if cursor is None or not page:
            break
    if prune is not None:  # the archived events below the truncation points, in one rewrite
        await prune.finish(rules, default_for, dry_run)
        report.archived = prune.would_remove() if dry_run else await prune.apply()
        if prune.busy is not None:
            report.errors.append(("archive", prune.busy))
    report.scanned, report.streams = progress.scanned, progress.streams
    report.events, report.bytes = progress.events, progress.bytes
    report.finished_at = time.time()
    return report


async def _one(
    store: EventStore,
    info: StreamRetention,
    rules: dict[str, Retention],
    now_us: int,
    dry_run: bool,
    batch_size: int,
    prune: ArchivePrune | None = None,
) -> tuple[int, int]:
    default = default_for(rules, info.stream)
    if prune is None:
        before = await target(store, info, default, now_us)
    else:
        before = await prune.target(info, default)
        prune.visit(info.stream, before)
    if info.first is None or info.first >= before:
        if prune is not None and not dry_run:  # archived events alone below: record it
            await prune.record(info.stream, before, info.truncate_before)
        return 0, 0
    events = size = 0
    while True:  # one short transaction per batch: no long lock, no long transaction
        n, b = await store.scavenge_stream(info.stream, before, batch_size, dry_run)
        events, size = events + n, size + b
        if dry_run or n < batch_size:
            return events, size


class Scavenger:
    """Runs ``scavenge`` every ``interval`` seconds while holding the ``chronik.scavenger`` lease
    of the store (one runner per store); ``async with Scavenger(store, ...)``."""

    def __init__(
        self,
        store: EventStore,
        defaults: Mapping[str, Retention] | None = None,
        *,
        interval: float = 3600.0,
        batch_size: int = 500,
        lease_ttl: float = 60.0,
        owner: str | None = None,
    ) -> None:
        if not isinstance(interval, int | float) or not interval > 0:
            raise ValidationError(f"interval must be > 0, got {interval!r}", field="interval")
        if not isinstance(lease_ttl, int | float) or not lease_ttl > 0:
            raise ValidationError(f"lease_ttl must be > 0, got {lease_ttl!r}", field="lease_ttl")
        self.store = store
        self.defaults = check_defaults(defaults)
        self.interval = float(interval)
        self.batch_size = batch_size
        self.lease_ttl = float(lease_ttl)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.last_report: ScavengeReport | None = None
        self.last_error: str | None = None
        self.progress: ScavengeProgress | None = None  # of the run in progress
        self.runs = 0
        #: awaited after each batch with the run's progress (the CLI prints it)
        self.on_progress: Callable[[ScavengeProgress], Awaitable[None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._renewed = 0.0
        self._forever = False  # run_forever is running (under a supervisor)

    def __repr__(self) -> str:
        state = "running" if self._task is not None and not self._task.done() else "stopped"
        return f"<Scavenger {state} every {self.interval:g}s runs={self.runs}>"

    def health(self) -> dict[str, Any]:
        """Whether the loop is alive, and what its last run did or why it failed."""
        alive = self._forever or (self._task is not None and not self._task.done())
        last = self.last_report
        return {
            "ok": alive and self.last_error is None,
            "running": alive,
            "runs": self.runs,
            "in_progress": None if self.progress is None else msgspec.to_builtins(self.progress),
            "last_report": None if last is None else _summary(last),
            "last_error": self.last_error,
        }

    async def run_once(self, dry_run: bool = False) -> ScavengeReport | None:
        """One run if this process holds (or takes) the lease; None when another one has it."""
        try:
            await self.store.acquire_lease(LEASE, self.owner, self.lease_ttl)
        except LeaseHeld:
            return None
        self._renewed = time.monotonic()
        self.progress = ScavengeProgress()
        try:
            report = await scavenge(
                self.store,
                self.defaults,
                dry_run=dry_run,
                batch_size=self.batch_size,
                on_batch=self._on_batch,
            )
        finally:
            self.progress = None
        if not dry_run:
            self.runs += 1
            self.last_report = report
        return report

    async def _on_batch(self, progress: ScavengeProgress) -> None:
        self.progress = msgspec.structs.replace(progress)
        if self.on_progress is not None:
            await self.on_progress(self.progress)
        if time.monotonic() - self._renewed > self.lease_ttl / 3:
            await self.store.acquire_lease(LEASE, self.owner, self.lease_ttl)  # LeaseHeld: stop
            self._renewed = time.monotonic()

    async def run_forever(self) -> None:
        """Run every ``interval`` seconds until cancelled; a failed run raises (for a
        supervisor: ``chronik serve`` restarts it after a backoff and health shows why)."""
        _RUNNING[id(self.store)] = self
        self._forever = True
        try:
            while True:
                try:
                    await self.run_once()
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    raise
                self.last_error = None
                await asyncio.sleep(self.interval)
        finally:
            self._forever = False
            if _RUNNING.get(id(self.store)) is self:
                del _RUNNING[id(self.store)]

    @staticmethod
    def running_on(store: EventStore) -> Scavenger | None:
        """The scavenger running in this process on ``store`` (the admin page's), if any."""
        found = _RUNNING.get(id(store))
        return found if found is not None and found.store is store else None

    async def _loop(self) -> None:
        _RUNNING[id(self.store)] = self
        while True:
            try:
                await self.run_once()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # supervised: reported in health, tried again next round
                _log.exception("scavenger run failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        """Start the background loop (its first run right away)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="chronik-scavenger")

    async def stop(self) -> None:
        """Stop the loop (a run in progress ends after its current batch) and let the lease go."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if _RUNNING.get(id(self.store)) is self:
            del _RUNNING[id(self.store)]
        with contextlib.suppress(Exception):
            await self.store.release_lease(LEASE, self.owner)

    async def __aenter__(self) -> Scavenger:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _summary(report: ScavengeReport) -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "finished_at": report.finished_at,
        "streams": report.streams,
        "events": report.events,
        "bytes": report.bytes,
        "errors": len(report.errors),
    }
