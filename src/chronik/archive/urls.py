"""``open_blobs(url)``: the blob store a URL names.

- ``memory://``: ``MemoryBlobs`` (a fresh, empty store);
- ``file:///abs/path`` or a plain path: ``DirectoryBlobs``;
- ``s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1``: ``S3Blobs``, keys
  from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or the variables named by
  ``access_key_env`` / ``secret_key_env``); keys never appear in the URL.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlsplit

from chronik.archive.blobs import BlobStore, MemoryBlobs
from chronik.errors import ConfigurationError

__all__ = ["open_blobs"]

_S3_OPTIONS = {"endpoint", "region", "access_key_env", "secret_key_env"}


def _s3(url: str) -> BlobStore:
    from chronik.archive.s3 import S3Blobs

    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(query) - _S3_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"unknown S3 archive option(s) {', '.join(sorted(unknown))}: "
            f"expected {', '.join(sorted(_S3_OPTIONS))}"
        )
    names = (
        query.get("access_key_env", "AWS_ACCESS_KEY_ID"),
        query.get("secret_key_env", "AWS_SECRET_ACCESS_KEY"),
    )
    keys = [os.environ.get(n, "") for n in names]
    missing = [n for n, k in zip(names, keys, strict=True) if not k]
    if missing:
        raise ConfigurationError(f"S3 archive {url!r}: set {' and '.join(missing)}")
    return S3Blobs(
        query.get("endpoint"),
        parts.netloc,
        unquote(parts.path),
        access_key=keys[0],
        secret_key=keys[1],
        region=query.get("region") or os.environ.get("AWS_REGION", "us-east-1"),
    )


def open_blobs(url: str) -> BlobStore:
    """The blob store ``url`` names (see the module docstring); ConfigurationError else."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"invalid archive URL {url!r}")
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "memory":
        return MemoryBlobs()
    if scheme == "s3":
        return _s3(url)
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(f"invalid archive URL {url!r}: expected file:///abs/path")
        path = unquote(parts.path)
    elif scheme:
        raise ConfigurationError(
            f"unknown archive URL scheme {scheme!r}: expected memory://, file:///path, s3://"
        )
    else:
        path = url
    from chronik.archive.directory import DirectoryBlobs

    return DirectoryBlobs(path)
