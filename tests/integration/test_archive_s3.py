"""The blob-store and archive suites on S3: a real moto server in server mode, over HTTP with
our own AWS Signature V4; plus ``open_blobs`` on an ``s3://`` URL and S3 errors."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable

import pytest

from chronik.archive.archive import Archive
from chronik.archive.blobs import BlobStore
from chronik.archive.errors import ArchiveUnavailable
from chronik.archive.s3 import S3Blobs
from chronik.archive.urls import open_blobs
from chronik.testing.conformance_blobs import ArchiveConformance, BlobStoreConformance
from chronik.testing.s3_server import S3Service, s3_server

__all__ = ["s3_server"]

_buckets = itertools.count()


def _bucket(server: S3Service) -> str:
    name = f"chronik-test-{next(_buckets)}"
    blobs = server.blobs(name)

    async def create() -> None:
        await blobs.create_bucket()
        await blobs.close()

    asyncio.run(create())
    return name


@pytest.fixture(scope="module")
def bucket(s3_server: S3Service) -> str:
    """A bucket of the session's S3 server for this module."""
    return _bucket(s3_server)


class TestS3Blobs(BlobStoreConformance):
    """The blob suite on S3 objects under a fresh prefix."""

    @pytest.fixture
    async def blobs(self, s3_server: S3Service, bucket: str) -> AsyncIterator[BlobStore]:
        """An S3Blobs on a fresh prefix of the module's bucket."""
        store = s3_server.blobs(bucket, f"p{next(_buckets)}/")
        yield store
        await store.close()


class TestArchiveOnS3(ArchiveConformance):
    """The archive suite on S3 blobs."""

    examples = 8

    @pytest.fixture
    def make_blobs(self, s3_server: S3Service, bucket: str) -> Callable[[], BlobStore]:
        """An S3Blobs on a fresh prefix on each call."""
        return lambda: s3_server.blobs(bucket, f"a{next(_buckets)}")


async def test_open_blobs_reads_an_s3_url_with_keys_from_the_environment(
    s3_server: S3Service, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``s3://bucket/prefix?endpoint=...`` with keys from named environment variables gives an
    S3Blobs that an archive seals into and a second URL reads back."""
    keys = s3_server.env()
    monkeypatch.setenv("ARC_AK", keys["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("ARC_SK", keys["AWS_SECRET_ACCESS_KEY"])
    url = f"{s3_server.url(bucket, 'via-url')}&access_key_env=ARC_AK&secret_key_env=ARC_SK"
    blobs = open_blobs(url)
    assert isinstance(blobs, S3Blobs) and blobs.prefix == "via-url/"
    await blobs.put("x/y", b"1")
    assert await blobs.list() == ["x/y"]
    await blobs.close()
    archive = Archive(open_blobs(url))
    await archive.open()
    assert archive.horizon is None
    await archive.close()


async def test_a_missing_bucket_is_a_typed_error_naming_the_blob(s3_server: S3Service) -> None:
    """A put into a bucket that does not exist raises ArchiveUnavailable naming the blob."""
    blobs = s3_server.blobs("no-such-bucket")
    with pytest.raises(ArchiveUnavailable, match=r"manifest\.json") as caught:
        await blobs.put("manifest.json", b"{}")
    assert caught.value.blob == "manifest.json"
    await blobs.close()


async def test_a_server_that_is_down_is_archive_unavailable() -> None:
    """A connection refused (after the retries) raises ArchiveUnavailable naming the blob."""
    from chronik.testing.service_base import free_port

    blobs = S3Blobs(
        f"http://127.0.0.1:{free_port()}", "b", access_key="a", secret_key="s", timeout=2
    )
    with pytest.raises(ArchiveUnavailable, match=r"segments/x\.dat"):
        await blobs.get("segments/x.dat")
    await blobs.close()


async def test_the_server_checks_signatures(s3_server: S3Service, bucket: str) -> None:
    """The server verifies SigV4: our signature passes, also for a prefix with characters that
    need encoding; a wrong secret is refused (ArchiveUnavailable, SignatureDoesNotMatch)."""
    odd = s3_server.blobs(bucket, "tenant=a b+c/ü")
    await odd.put("segments/x.dat", b"odd")
    assert await odd.get("segments/x.dat", 1) == b"dd"
    assert await odd.list("segments/") == ["segments/x.dat"]
    await odd.close()
    wrong = S3Blobs(
        s3_server.endpoint, bucket, access_key=s3_server.access_key, secret_key="not-the-secret"
    )
    with pytest.raises(ArchiveUnavailable, match="SignatureDoesNotMatch"):
        await wrong.list()
    await wrong.close()
