"""Blobs as files under a directory: ``DirectoryBlobs(path)``.

A blob ``a/b.dat`` is the file ``path/a/b.dat``. ``put`` writes a temp file beside the target,
fsyncs it, renames it over the target and fsyncs the directory, so a crash leaves the old
value or the new one, never a part. File work runs in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path

from chronik.archive.blobs import BlobStore, check_name, check_range
from chronik.archive.errors import ArchiveUnavailable, BlobNotFound

__all__ = ["DirectoryBlobs"]

_TMP = ".tmp-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryBlobs(BlobStore):
    """Blobs as files under ``path`` (created when missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _file(self, name: str) -> Path:
        return self.path / check_name(name)

    def _put(self, name: str, data: bytes) -> None:
        target = self._file(name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f"{_TMP}{uuid.uuid4().hex}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            _fsync_dir(target.parent)
        except OSError as exc:
            raise ArchiveUnavailable(f"cannot write blob {name!r}: {exc}", blob=name) from exc

    async def put(self, name: str, data: bytes) -> None:
        """Write ``data`` to a temp file, fsync, rename over the blob, fsync the directory."""
        await asyncio.to_thread(self._put, name, bytes(data))

    def _get(self, name: str, start: int, end: int | None) -> bytes:
        try:
            with open(self._file(name), "rb") as f:
                f.seek(start)
                return f.read() if end is None else f.read(end - start)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(name) from None
        except OSError as exc:
            raise ArchiveUnavailable(f"cannot read blob {name!r}: {exc}", blob=name) from exc

    async def get(self, name: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the blob's file."""
        check_range(start, end)
        check_name(name)
        if end is not None and end - start <= 1 << 20:
            return self._get(name, start, end)  # a small ranged read: cheaper than a thread hop
        return await asyncio.to_thread(self._get, name, start, end)

    def _list(self, prefix: str) -> list[str]:
        if not self.path.is_dir():
            return []
        out = []
        for root, _dirs, files in os.walk(self.path):
            for file in files:
                if file.startswith(_TMP):
                    continue
                name = Path(root, file).relative_to(self.path).as_posix()
                if name.startswith(prefix):
                    out.append(name)
        return sorted(out)

    async def list(self, prefix: str = "") -> list[str]:
        """Sorted names of the files under the directory that start with ``prefix``."""
        return await asyncio.to_thread(self._list, prefix)

    def _delete(self, name: str) -> None:
        try:
            os.unlink(self._file(name))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ArchiveUnavailable(f"cannot delete blob {name!r}: {exc}", blob=name) from exc

    async def delete(self, name: str) -> None:
        """Remove the blob's file if it is there."""
        await asyncio.to_thread(self._delete, name)

    def __repr__(self) -> str:
        return f"<DirectoryBlobs {str(self.path)!r}>"
