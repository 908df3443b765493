"""The blob port: named byte strings in a flat namespace (a directory, an S3 bucket, memory).

``put`` is atomic (a reader sees the whole new value or the old one, never a part), ``get``
reads a byte range, ``list`` returns sorted names under a prefix. ``MemoryBlobs`` is the
reference adapter; ``chronik.archive.directory`` and ``chronik.archive.s3`` are the others,
``chronik.archive.urls.open_blobs`` picks one from a URL. ``chronik.testing.conformance_blobs``
is the suite every adapter passes.
"""

from __future__ import annotations

import abc
import re
from types import TracebackType
from typing import Self

from chronik.archive.errors import BlobNotFound
from chronik.errors import ValidationError

__all__ = ["BlobStore", "MemoryBlobs", "check_name", "check_range"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,511}")


def check_name(name: str) -> str:
    """``name`` when it is a valid blob name (``[A-Za-z0-9._/-]``, no ``..`` part, no empty
    part), else ValidationError."""
    if (
        not isinstance(name, str)
        or not _NAME.fullmatch(name)
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise ValidationError(f"invalid blob name {name!r}", field="name")
    return name


def check_range(start: int, end: int | None) -> None:
    """ValidationError unless ``0 <= start`` and (``end`` is None or ``start <= end``)."""
    if (
        type(start) is not int
        or start < 0
        or (end is not None and (type(end) is not int or end < start))
    ):
        raise ValidationError(f"invalid byte range [{start!r}, {end!r})", field="range")


class BlobStore(abc.ABC):
    """Named blobs: ``put`` (atomic), ``get`` (a byte range), ``list``, ``delete``, ``close``."""

    @abc.abstractmethod
    async def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name``, replacing any value; readers see all of it or none."""

    @abc.abstractmethod
    async def get(self, name: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the blob (to its end when ``end`` is None; a range past
        the end is cut short); BlobNotFound when there is no such blob."""

    @abc.abstractmethod
    async def list(self, prefix: str = "") -> list[str]:
        """The names that start with ``prefix``, sorted."""

    @abc.abstractmethod
    async def delete(self, name: str) -> None:
        """Remove the blob; a missing one is fine."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store is unusable after."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class MemoryBlobs(BlobStore):
    """Blobs in a dict: the reference adapter (and the fastest for tests)."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    async def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name``."""
        self._blobs[check_name(name)] = bytes(data)

    async def get(self, name: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the blob."""
        check_range(start, end)
        try:
            data = self._blobs[check_name(name)]
        except KeyError:
            raise BlobNotFound(name) from None
        return data[start:end]

    async def list(self, prefix: str = "") -> list[str]:
        """Sorted names under ``prefix``."""
        return sorted(n for n in self._blobs if n.startswith(prefix))

    async def delete(self, name: str) -> None:
        """Remove the blob if it is there."""
        self._blobs.pop(check_name(name), None)

    def __repr__(self) -> str:
        return f"<MemoryBlobs {len(self._blobs)} blobs>"
