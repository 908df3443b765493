"""Blobs in an S3-compatible bucket: ``S3Blobs(endpoint, bucket, prefix, access_key, ...)``.

Path-style requests over ``httpx.AsyncClient`` signed with AWS Signature V4
(``chronik.archive.sigv4``): PUT (atomic in S3: a reader sees the old object or the new one),
GET with a ``Range`` header, DELETE, ListObjectsV2 followed through continuation tokens.
Transient failures (connection errors, 5xx, 429) are retried a few times (every operation
here is idempotent), then raise ArchiveUnavailable naming the blob; 404 is BlobNotFound.
Needs the ``s3`` extra (``httpx``).
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from chronik.archive.blobs import BlobStore, check_name, check_range
from chronik.archive.errors import ArchiveUnavailable, BlobNotFound
from chronik.archive.sigv4 import canonical_query, sign
from chronik.errors import ConfigurationError, MissingExtraError

if TYPE_CHECKING:
    import httpx

__all__ = ["S3Blobs"]

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_ATTEMPTS = 4


def _error_text(body: bytes) -> str:
    """``Code: Message`` from an S3 error document (or the start of the body)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return body[:200].decode("utf-8", "replace")
    code = root.findtext("Code") or root.findtext(f"{_NS}Code") or "?"
    message = root.findtext("Message") or root.findtext(f"{_NS}Message") or ""
    return f"{code}: {message}"


class S3Blobs(BlobStore):
    """Blobs as objects ``<prefix><name>`` in ``bucket`` at ``endpoint``."""

    def __init__(
        self,
        endpoint: str | None,
        bucket: str,
        prefix: str = "",
        *,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        timeout: float = 30.0,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - the extra is installed in dev
            raise MissingExtraError("s3", "httpx") from exc
        endpoint = endpoint or f"https://s3.{region}.amazonaws.com"
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"invalid S3 endpoint {endpoint!r}: expected http(s)://host")
        if not bucket or "/" in bucket:
            raise ConfigurationError(f"invalid S3 bucket {bucket!r}")
        if not access_key or not secret_key:
            raise ConfigurationError("S3 needs an access key and a secret key")
        self.endpoint = f"{parts.scheme}://{parts.netloc}"
        self.host = parts.netloc
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.region = region
        self._keys = (access_key, secret_key)
        self._client = httpx.AsyncClient(timeout=timeout)

    async def _request(
        self,
        method: str,
        key: str | None,
        blob: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        import httpx

        path = f"/{self.bucket}" + ("" if key is None else f"/{key}")
        params = dict(query or {})
        url = self.endpoint + quote(path, safe="/~")
        if params:
            url += "?" + canonical_query(params)
        last: str = ""
        for attempt in range(_ATTEMPTS):
            signed = sign(
                method,
                self.host,
                path,
                params,
                body,
                access_key=self._keys[0],
                secret_key=self._keys[1],
                region=self.region,
                headers=headers,
            )
            try:
                response = await self._client.request(
                    method,
                    url,
                    content=body if method == "PUT" else None,
                    headers=signed,
                )
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500 and response.status_code != 429:
                    return response
                last = f"HTTP {response.status_code} {_error_text(response.content)}"
            if attempt + 1 < _ATTEMPTS:
                await asyncio.sleep(0.05 * 2**attempt)
        raise ArchiveUnavailable(
            f"S3 {method} of blob {blob!r} in bucket {self.bucket!r} failed: {last}", blob=blob
        )

    def _fail(self, method: str, blob: str, response: Any) -> ArchiveUnavailable:
        return ArchiveUnavailable(
            f"S3 {method} of blob {blob!r} in bucket {self.bucket!r} refused: "
            f"HTTP {response.status_code} {_error_text(response.content)}",
            blob=blob,
        )

    async def create_bucket(self) -> None:
        """Create the bucket (fine when this account already owns it)."""
        body = b""
        if self.region != "us-east-1":
            body = (
                b'<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                b"<LocationConstraint>" + self.region.encode() + b"</LocationConstraint>"
                b"</CreateBucketConfiguration>"
            )
        response = await self._request("PUT", None, self.bucket, body=body)
        if response.status_code != 200 and b"BucketAlreadyOwnedByYou" not in response.content:
            raise self._fail("PUT", self.bucket, response)

    async def put(self, name: str, data: bytes) -> None:
        """PUT the object (S3 makes it visible whole or not at all)."""
        key = self.prefix + check_name(name)
        response = await self._request("PUT", key, name, body=bytes(data))
        if response.status_code != 200:
            raise self._fail("PUT", name, response)

    async def get(self, name: str, start: int = 0, end: int | None = None) -> bytes:
        """GET the object, with a Range header for a part of it."""
        check_range(start, end)
        key = self.prefix + check_name(name)
        if end is not None and end == start:
            await self._exists(name, key)
            return b""
        headers = {}
        if start or end is not None:
            headers["range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        response = await self._request("GET", key, name, headers=headers)
        if response.status_code in (200, 206):
            return bytes(response.content)
        if response.status_code == 404:
            raise BlobNotFound(name)
        if response.status_code == 416:  # the range starts past the end
            return b""
        raise self._fail("GET", name, response)

    async def _exists(self, name: str, key: str) -> None:
        response = await self._request("HEAD", key, name)
        if response.status_code == 404:
            raise BlobNotFound(name)
        if response.status_code != 200:
            raise self._fail("HEAD", name, response)

    async def list(self, prefix: str = "") -> list[str]:
        """ListObjectsV2 under ``prefix``, every page."""
        out: list[str] = []
        query = {"list-type": "2", "prefix": self.prefix + prefix}
        while True:
            response = await self._request("GET", None, prefix or "*", query=query)
            if response.status_code != 200:
                raise self._fail("LIST", prefix or "*", response)
            root = ET.fromstring(response.content)
            for item in root.iter(f"{_NS}Contents"):
                key = item.findtext(f"{_NS}Key") or ""
                out.append(key[len(self.prefix) :])
            token = root.findtext(f"{_NS}NextContinuationToken")
            if root.findtext(f"{_NS}IsTruncated") != "true" or not token:
                return sorted(out)
            query = {**query, "continuation-token": token}

    async def delete(self, name: str) -> None:
        """DELETE the object (S3 answers 204 whether or not it was there)."""
        key = self.prefix + check_name(name)
        response = await self._request("DELETE", key, name)
        if response.status_code not in (200, 204, 404):
            raise self._fail("DELETE", name, response)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"<S3Blobs {self.endpoint}/{self.bucket}/{self.prefix}>"
