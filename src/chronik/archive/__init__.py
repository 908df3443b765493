"""The archive: sealed ranges of the global log as compressed, checksummed segments in a blob
store (memory, a directory or an S3-compatible bucket), read back in one order.

``Archive`` (``chronik.archive.archive``) over a ``BlobStore`` (``chronik.archive.blobs``);
``open_blobs(url)`` (``chronik.archive.urls``) picks the blob store from a URL. The adapters
(``directory``, ``s3``) are imported by path, not re-exported; ``format`` documents the
segment format.

Imports: chronik.errors, chronik.messages and chronik.dcb only (never chronik.store: the store
imports the archive); httpx lazily, in ``s3`` (the ``s3`` extra).
"""

from __future__ import annotations

from chronik.archive.archive import Archive
from chronik.archive.blobs import BlobStore, MemoryBlobs
from chronik.archive.errors import (
    ArchiveCorrupt,
    ArchiveError,
    ArchiveOrderRefused,
    ArchiveUnavailable,
    BlobNotFound,
)
from chronik.archive.format import SegmentInfo

__all__ = [
    "Archive",
    "ArchiveCorrupt",
    "ArchiveError",
    "ArchiveOrderRefused",
    "ArchiveUnavailable",
    "BlobNotFound",
    "BlobStore",
    "MemoryBlobs",
    "SegmentInfo",
]
