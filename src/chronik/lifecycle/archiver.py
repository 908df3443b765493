"""The archiver: seals the old part of the global log into the archive, then drops it from the
hot store.

``archive_log(store, archive, retain_at_least=N, max_age=...)`` seals the hot events after the
archive's horizon, in position order, in segments of ``segment_events``, keeping hot at least
the last ``retain_at_least`` events (and, with ``max_age``, every event younger than that). Each
segment is sealed, its blobs checked against the manifest's checksums, then dropped from the hot
log (``store.drop_archived``), which records the store's archive floor in the same transaction.
A run that dies between a seal and its drop leaves the archive ahead of the floor: the next run
drops that range first, so a kill at any point loses nothing and duplicates nothing (readers
skip hot events at or below the archive's horizon). ``dry_run=True`` counts what would go.

The ``Archiver`` runs it every ``interval`` seconds while it holds the store's
``chronik.archiver`` lease (one runner per store, as the scavenger), with progress and a health
entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from chronik.archive.archive import Archive
from chronik.archive.errors import ArchiveCorrupt, BlobNotFound
from chronik.archive.format import SegmentInfo, blob_names, sha256
from chronik.errors import LeaseHeld, NotSupported, ValidationError
from chronik.messages import Position, RecordedEvent
from chronik.store.base import EventStore

__all__ = [
    "LEASE",
    "ArchiveProgress",
    "ArchiveReport",
    "Archiver",
    "archive_log",
    "rewrite_archived",
]

LEASE: Final = "chronik.archiver"
_log = logging.getLogger("chronik.archiver")


class ArchiveProgress(msgspec.Struct):
    """How far a run is: segments sealed, events archived (or that would be) so far."""

    segments: int = 0
    events: int = 0
    dropped: int = 0
    horizon: str | None = None


class ArchiveReport(msgspec.Struct):
    """What a run did (``dry_run``: would do): segments sealed, events archived and dropped
    from the hot log, the archive's horizon after it."""

    dry_run: bool
    started_at: float
    finished_at: float = 0.0
    segments: int = 0
    events: int = 0
    dropped: int = 0
    horizon: str | None = None
    recovered: int = 0  # events of an earlier run's seal dropped now (it died before its drop)


def _check(name: str, value: object, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise ValidationError(f"{name} must be a number >= {low:g}, got {value!r}", field=name)


async def check_segment(archive: Archive, info: SegmentInfo) -> None:
    """ArchiveCorrupt unless the segment's blobs are all there and match the manifest."""
    sizes = [(info.bytes, info.sha256), (info.index_bytes, info.index_sha256)]
    sizes.append((info.ids_bytes, info.ids_sha256))
    for blob, (size, digest) in zip(blob_names(info.name), sizes, strict=True):
        try:
            data = await archive.blobs.get(blob)
        except BlobNotFound as exc:
            raise ArchiveCorrupt(f"segment {info.name}: blob {blob!r} is missing") from exc
        if len(data) != size or sha256(data) != digest:
            raise ArchiveCorrupt(f"segment {info.name}: blob {blob!r}: checksum mismatch")


async def _cutoff(store: EventStore, retain_at_least: int) -> Position | None:
    """The newest position that may go: ``retain_at_least`` events stay after it."""
    last: Position | None = None
    n = 0
    async for event in store.read_all(backward=True, limit=retain_at_least + 1):
        last, n = event.position, n + 1
    return last if n == retain_at_least + 1 else None


async def archive_log(
    store: EventStore,
    archive: Archive,
    *,
    retain_at_least: int = 100_000,
    max_age: float | None = None,
    segment_events: int = 50_000,
    dry_run: bool = False,
    now: float | None = None,
    on_segment: Callable[[ArchiveProgress], Awaitable[None]] | None = None,
) -> ArchiveReport:
    """Seal the hot log's old events into ``archive`` and drop them (see the module docstring).

    ``on_segment`` is awaited after each segment is sealed and again once it is dropped (the
    ``Archiver`` renews its lease there; what it raises ends the run, as a crash would).
    """
    if type(retain_at_least) is not int or retain_at_least < 1:
        raise ValidationError(
            f"retain_at_least must be an int >= 1, got {retain_at_least!r}",
            field="retain_at_least",
        )
    if type(segment_events) is not int or not 1 <= segment_events <= 1_000_000:
        raise ValidationError(
            f"segment_events must be 1..1000000, got {segment_events!r}", field="segment_events"
        )
    if max_age is not None:
        _check("max_age", max_age, 0)
    report = ArchiveReport(dry_run, time.time())
    progress = ArchiveProgress()
    await archive.refresh()
    floor = await store.archive_floor()
    horizon = archive.horizon
    if not dry_run and horizon is not None and (floor is None or floor < horizon):
        report.recovered = await store.drop_archived(horizon)  # sealed, then the run died
    cutoff = await _cutoff(store, retain_at_least)
    young = None if max_age is None else int(((now or time.time()) - max_age) * 1_000_000)
    after = horizon if horizon is not None else floor
    if cutoff is not None and (after is None or after < cutoff):
        batch: list[RecordedEvent] = []
        async for event in store.read_all(after=after):  # past the horizon: the hot log
            done = event.position > cutoff or (young is not None and event.recorded_at_us > young)
            if not done:
                batch.append(event)
            if batch and (done or len(batch) == segment_events):
                await _segment(store, archive, batch, dry_run, progress, on_segment)
                batch = []
            if done:
                break
        if batch:
            await _segment(store, archive, batch, dry_run, progress, on_segment)
    report.segments, report.events = progress.segments, progress.events
    report.dropped = progress.dropped
    report.horizon = None if archive.horizon is None else str(archive.horizon)
    report.finished_at = time.time()
    return report


async def _segment(
    store: EventStore,
    archive: Archive,
    batch: list[RecordedEvent],
    dry_run: bool,
    progress: ArchiveProgress,
    on_segment: Callable[[ArchiveProgress], Awaitable[None]] | None,
) -> None:
    progress.segments += 1
    progress.events += len(batch)
    progress.horizon = str(batch[-1].position)
    if dry_run:
        return
    info = await archive.seal(batch)
    await check_segment(archive, info)
    if on_segment is not None:
        await on_segment(progress)  # sealed, not dropped yet
    progress.dropped += await store.drop_archived(info.last)
    if on_segment is not None:
        await on_segment(progress)


async def rewrite_archived(
    store: EventStore, event: RecordedEvent, payload: bytes, content_type: str
) -> bool:
    """Replace ``event``'s payload in the store's archive too (redaction), dropping its
    stream's snapshot; False when no archive is attached or it holds no such event."""
    archive = store.archive
    if archive is None or await archive.get_event(event.event_id) is None:
        return False
    done = await archive.rewrite_payload(event.event_id, payload, content_type=content_type)
    with contextlib.suppress(NotSupported):
        await store.drop_snapshot(event.stream)
    return done


class Archiver:
    """Runs ``archive_log`` every ``interval`` seconds while holding the ``chronik.archiver``
    lease of the store (one runner per store); ``async with Archiver(store, archive, ...)``."""

    def __init__(
        self,
        store: EventStore,
        archive: Archive,
        *,
        retain_at_least: int = 100_000,
        max_age: float | None = None,
        segment_events: int = 50_000,
        interval: float = 60.0,
        lease_ttl: float = 60.0,
        owner: str | None = None,
    ) -> None:
        _check("interval", interval, 0.001)
        _check("lease_ttl", lease_ttl, 0.001)
        self.store, self.archive = store, archive
        self.retain_at_least, self.max_age = retain_at_least, max_age
        self.segment_events = segment_events
        self.interval, self.lease_ttl = float(interval), float(lease_ttl)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.last_report: ArchiveReport | None = None
        self.last_error: str | None = None
        self.progress: ArchiveProgress | None = None  # of the run in progress
        self.runs = 0
        #: awaited after each segment with the run's progress (the CLI prints it)
        self.on_progress: Callable[[ArchiveProgress], Awaitable[None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._renewed = 0.0
        self._forever = False  # run_forever is running (under a supervisor)

    def __repr__(self) -> str:
        state = "running" if self._task is not None and not self._task.done() else "stopped"
        return f"<Archiver {state} every {self.interval:g}s runs={self.runs}>"

    def health(self) -> dict[str, Any]:
        """Whether the loop is alive, and what its last run did or why it failed."""
        alive = self._forever or (self._task is not None and not self._task.done())
        last = self.last_report
        return {
            "ok": alive and self.last_error is None,
            "running": alive,
            "runs": self.runs,
            "in_progress": None if self.progress is None else msgspec.to_builtins(self.progress),
            "last_report": None if last is None else msgspec.to_builtins(last),
            "last_error": self.last_error,
            "horizon": None if self.archive.horizon is None else str(self.archive.horizon),
        }

    async def run_once(self, dry_run: bool = False) -> ArchiveReport | None:
        """One run if this process holds (or takes) the lease; None when another one has it."""
        try:
            await self.store.acquire_lease(LEASE, self.owner, self.lease_ttl)
        except LeaseHeld:
            return None
        self._renewed = time.monotonic()
        self.progress = ArchiveProgress()
        try:
            report = await archive_log(
                self.store,
                self.archive,
                retain_at_least=self.retain_at_least,
                max_age=self.max_age,
                segment_events=self.segment_events,
                dry_run=dry_run,
                on_segment=self._on_segment,
            )
        finally:
            self.progress = None
        if not dry_run:
            self.runs += 1
            self.last_report = report
        return report

    async def _on_segment(self, progress: ArchiveProgress) -> None:
        self.progress = msgspec.structs.replace(progress)
        if self.on_progress is not None:
            await self.on_progress(self.progress)
        if time.monotonic() - self._renewed > self.lease_ttl / 3:
            await self.store.acquire_lease(LEASE, self.owner, self.lease_ttl)  # LeaseHeld: stop
            self._renewed = time.monotonic()

    async def run_forever(self) -> None:
        """Run every ``interval`` seconds until cancelled; a failed run raises (for a
        supervisor: ``chronik serve`` restarts it after a backoff and health shows why)."""
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

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # supervised: reported in health, tried again next round
                _log.exception("archiver run failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        """Start the background loop (its first run right away)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="chronik-archiver")

    async def stop(self) -> None:
        """Stop the loop (a run in progress stops where it is: the next run completes it) and
        let the lease go."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.store.release_lease(LEASE, self.owner)

    async def __aenter__(self) -> Archiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
