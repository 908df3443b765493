"""The archive's errors, all under ``ArchiveError`` (a ``ChronikError``).

ArchiveError              an archive or blob operation failed (``blob`` names the blob)
├── BlobNotFound          a blob that is not there (also a NotFound)
├── ArchiveCorrupt        a blob whose bytes do not match its checksum, or do not decode
├── ArchiveOrderRefused   a seal of events at or before the horizon, or out of order
│                         (also a ValidationError: nothing was written)
└── ArchiveUnavailable    the blob store could not be reached or refused the request
"""

from __future__ import annotations

from chronik.errors import ChronikError, NotFound, ValidationError

__all__ = [
    "ArchiveCorrupt",
    "ArchiveError",
    "ArchiveOrderRefused",
    "ArchiveUnavailable",
    "BlobNotFound",
]


class ArchiveError(ChronikError):
    """An archive or blob operation failed; ``blob`` names the blob when there is one."""

    def __init__(self, message: str, *, blob: str | None = None) -> None:
        self.blob = blob
        super().__init__(message)


class BlobNotFound(ArchiveError, NotFound):
    """A blob that is not in the blob store."""

    def __init__(self, blob: str) -> None:
        super().__init__(f"blob {blob!r} not found", blob=blob)


class ArchiveCorrupt(ArchiveError):
    """A blob whose bytes do not match the checksum recorded for them, or do not decode."""


class ArchiveOrderRefused(ArchiveError, ValidationError):
    """A seal refused: events at or before the horizon, or not in position order."""

    def __init__(self, message: str) -> None:
        ArchiveError.__init__(self, message)
        self.field = "events"


class ArchiveUnavailable(ArchiveError):
    """The blob store could not be reached, or answered with an error."""
