"""The blob-store and archive conformance suites on memory and directory blobs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from chronik.archive.blobs import BlobStore, MemoryBlobs
from chronik.archive.directory import DirectoryBlobs
from chronik.testing.conformance_blobs import ArchiveConformance, BlobStoreConformance


class TestMemoryBlobs(BlobStoreConformance):
    """The suite on the reference adapter."""

    @pytest.fixture
    def blobs(self) -> BlobStore:
        """A fresh MemoryBlobs."""
        return MemoryBlobs()


class TestDirectoryBlobs(BlobStoreConformance):
    """The suite on files in a temp dir."""

    @pytest.fixture
    def blobs(self, tmp_path: Path) -> BlobStore:
        """A DirectoryBlobs on a directory that does not exist yet."""
        return DirectoryBlobs(tmp_path / "archive")


class TestArchiveOnMemory(ArchiveConformance):
    """The archive suite on memory blobs."""

    examples = 60

    @pytest.fixture
    def make_blobs(self) -> Callable[[], BlobStore]:
        """Fresh MemoryBlobs on each call."""
        return MemoryBlobs


class TestArchiveOnDirectory(ArchiveConformance):
    """The archive suite on directory blobs."""

    examples = 15

    @pytest.fixture
    def make_blobs(self, tmp_path: Path) -> Callable[[], BlobStore]:
        """A DirectoryBlobs on a fresh subdirectory on each call."""
        counter = itertools.count()
        return lambda: DirectoryBlobs(tmp_path / f"a{next(counter)}")
