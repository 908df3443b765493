"""The hot log and its archive: the store operations the archiver (``chronik.lifecycle.archiver``)
uses, and the archive a store reads through.

An archive (``chronik.archive.Archive``) holds sealed ranges of the global log. Once a range is
sealed, ``store.drop_archived(upto)`` deletes every event at or before ``upto`` from the hot log
(with its tag rows) in one transaction that also records ``upto`` as the store's archive floor
(``archive_floor()``, durable). Each stream keeps its row: its version, truncation point,
tombstone and retention rules, so appends with expected versions and ``stream_version`` go on as
before. The log's last event always stays (SQLite would hand its row id out again).

``store.attach_archive(archive)`` makes reads go through the archive and the hot log in one
position order (``chronik.store.archived_reads``). Adapters with ``supports_deletion`` (memory,
SQLite, PostgreSQL) implement the primitives; the others raise NotSupported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from chronik.errors import NotSupported, ValidationError
from chronik.messages import Position, StreamId
from chronik.store.archived_reads import check_archived_conditions
from chronik.store.records import WriteUnit

if TYPE_CHECKING:
    from chronik.archive.archive import Archive
    from chronik.store.base import EventStore

__all__ = ["ArchiveOps"]


class ArchiveOps:
    """The archive part of the store port (mixed into ``EventStore``)."""

    #: the archive reads go through (``attach_archive``); None: the hot log alone
    archive: Archive | None = None

    if TYPE_CHECKING:  # EventStore's

        async def _ready(self) -> None: ...

        def _require_deletion(self) -> None: ...

        async def _head(self) -> Position | None: ...

    def attach_archive(self, archive: Archive | None) -> None:
        """Read through ``archive`` (an opened ``chronik.archive.Archive``) from now on: every
        read sees archived events, then hot ones, in one order. None detaches it."""
        self.archive = archive

    async def archive_floor(self) -> Position | None:
        """The hot log's low bound: every event at or before it went to the archive (None:
        nothing was dropped). NotSupported on a store without deletion."""
        self._require_deletion()
        await self._ready()
        return await self._archive_floor()

    async def drop_archived(self, upto: Position) -> int:
        """Delete every hot event at or before ``upto`` (sealed in the archive first) and record
        ``upto`` as the archive floor, in one transaction; the number of events deleted. A
        retry (``upto`` at or below the floor) deletes nothing. ValidationError when ``upto``
        reaches the log's last event, which stays, or lies beyond the attached archive's
        horizon; NotSupported on a store without deletion."""
        if not isinstance(upto, Position):
            raise ValidationError(f"expected a Position, got {upto!r}", field="upto")
        self._require_deletion()
        await self._ready()
        archive = self.archive
        if archive is not None and (archive.horizon is None or archive.horizon < upto):
            await archive.refresh()  # an archiver with its own view may have sealed it
        if archive is not None and (archive.horizon is None or archive.horizon < upto):
            raise ValidationError(
                f"the archive holds events up to {archive.horizon}, not {upto}", field="upto"
            )
        head = await self._head()
        if head is None or upto >= head:
            raise ValidationError(
                f"the log's last event ({head}) stays hot: drop before it, not up to {upto}",
                field="upto",
            )
        return await self._drop_archived(upto)

    async def _check_archived(self, unit: WriteUnit) -> None:
        """AppendConditionFailed when an archived event matches one of the unit's conditions."""
        if self.archive is not None and unit.conditions:
            await check_archived_conditions(cast("EventStore", self), unit.conditions)

    async def _refuse_archived_compaction(
        self, stream: StreamId, upto: int, exc: ValidationError
    ) -> None:
        """ValidationError saying why when a compaction at ``upto`` was refused (``exc``)
        because that event is archived: the summary must replace a hot event (compact at a
        later sequence; the scavenger then removes the archived prefix too)."""
        archive = self.archive
        if archive is None or exc.field != "upto":
            return
        found = await archive.stream_range(stream)
        if found is not None and found[0] <= upto <= found[1]:
            raise ValidationError(
                f"{stream}: the event at sequence {upto} is archived; compact at a sequence "
                f"after {found[1]} (still in the hot log): the archived events before it go "
                "with the next scavenger run",
                field="upto",
            ) from exc

    # --- what adapters with supports_deletion implement ---------------------------------------

    async def _archive_floor(self) -> Position | None:
        raise NotSupported("archiving", type(self).__name__)

    async def _drop_archived(self, upto: Position) -> int:
        raise NotSupported("archiving", type(self).__name__)
