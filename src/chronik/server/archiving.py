"""``chronik serve``'s archive: the ``archive`` config section, the archive every read goes
through, and the supervised archiver.

    archive:
      url: /var/lib/chronik/archive   # a directory, file:///..., or s3://bucket/prefix?endpoint=...
      retain_at_least: 100000         # events that stay in the hot store
      max_age: 7d                     # optional: younger events stay hot too
      interval: 60                    # seconds (or "1m") between archiver runs
      archiver: true                  # false: only read through the archive here

``open_archiving`` opens the archive and attaches it to the app's store before anything serves,
so reads, subscriptions and rebuilds see archived and hot events as one log; its ``start``
runs a ``chronik.lifecycle.archiver.Archiver`` as the supervised task ``archiver`` (health shows
it) that works only while it holds the store's archiver lease: one runner per store. Imports
chronik's core, never the HTTP stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import msgspec

from chronik.app import Chronik
from chronik.archive.archive import Archive
from chronik.archive.urls import open_blobs
from chronik.errors import ConfigurationError, ValidationError
from chronik.lifecycle.archiver import Archiver
from chronik.store.retention import parse_duration

__all__ = ["ArchiveConfig", "Archiving", "open_archiving"]

log = logging.getLogger("chronik.server")


class ArchiveConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The ``archive`` section: where the archive is and how much stays hot."""

    url: str
    retain_at_least: int = 100_000
    max_age: float | str | None = None
    interval: float | str = 60.0
    segment_events: int = 50_000
    lease_ttl: float = 60.0
    archiver: bool = True

    def check(self) -> None:
        """Refuse a section that cannot work (ConfigurationError naming the setting)."""
        if not self.url:
            raise ConfigurationError("archive.url: name the archive (a directory or s3://...)")
        if self.retain_at_least < 1:
            raise ConfigurationError("archive.retain_at_least: must be >= 1")
        if not 1 <= self.segment_events <= 1_000_000:
            raise ConfigurationError("archive.segment_events: must be 1..1000000")
        if not self.lease_ttl > 0:
            raise ConfigurationError("archive.lease_ttl: must be > 0")
        for name in ("interval", "max_age"):
            value = getattr(self, name)
            try:
                if value is not None:
                    parse_duration(value, name)
            except ValidationError as exc:
                raise ConfigurationError(f"archive.{name}: {exc}") from None


class Archiving:
    """The archive attached to a served store, and its archiver once started."""

    def __init__(self, config: ArchiveConfig, app: Chronik, archive: Archive) -> None:
        self.config, self.app, self.archive = config, app, archive
        age = config.max_age
        self.archiver = Archiver(
            app.store,
            archive,
            retain_at_least=config.retain_at_least,
            max_age=None if age is None else parse_duration(age, "max_age"),
            segment_events=config.segment_events,
            interval=parse_duration(config.interval, "interval"),
            lease_ttl=config.lease_ttl,
        )

    def start(self) -> Callable[[], Awaitable[None]]:
        """Start the archiver as the supervised task ``archiver`` (unless the section turns it
        off) and load the segment indexes in the background (the first read of an archived
        stream then fetches its blocks only); the step that stops it, lets its lease go and
        closes the archive."""
        if self.config.archiver:
            self.app.health.supervise("archiver", self.archiver.run_forever, vital=False)
        warming = asyncio.get_running_loop().create_task(self._warm_up())

        async def stop_archiver() -> None:
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warming
            if self.config.archiver:
                await self.app.health.stop_task("archiver")
                await self.archiver.stop()
            await self.archive.close()

        return stop_archiver

    async def _warm_up(self) -> None:
        try:
            await self.archive.warm_up()
        except Exception as exc:  # only a cache: each read loads the indexes it needs
            log.warning("archive indexes not preloaded: %s", exc)


async def open_archiving(config: ArchiveConfig, app: Chronik) -> Archiving:
    """Open the archive ``config`` names and attach it to ``app``'s store."""
    config.check()
    archive = Archive(open_blobs(config.url))
    await archive.open()
    app.store.attach_archive(archive)
    return Archiving(config, app, archive)
