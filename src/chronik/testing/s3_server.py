"""An S3-compatible test service: moto's server mode (``python -m moto.server``) on a free
loopback port, in the ``dev`` extra (``moto[server]``), so no apt package is needed::

    with S3Service() as server:
        blobs = server.blobs("bucket-1")   # an S3Blobs on a fresh bucket (create_bucket first)

Authentication is on (``INITIAL_NO_AUTH_ACTION_COUNT``): once started, the service creates an
IAM user with an allow-all policy and an access key through moto's IAM API (the only
unauthenticated calls), so every S3 request must carry a valid AWS Signature V4 for that key
(a wrong secret gets ``SignatureDoesNotMatch``). ``access_key`` / ``secret_key`` hold it.

``s3_server`` is a session fixture for tests (import it into a test module); with
CHRONIK_REQUIRE_SERVICES=1 a server that cannot start fails the run instead of skipping.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import pytest

from chronik.testing.brokers import _ProcessService
from chronik.testing.service_base import ServiceNotStarted, unavailable

if TYPE_CHECKING:
    from chronik.archive.s3 import S3Blobs

__all__ = ["S3Service", "s3_server"]

_USER = "chronik-test"
_POLICY = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'
_IAM_NS = "{https://iam.amazonaws.com/doc/2010-05-08/}"


class S3Service(_ProcessService):
    """``python -m moto.server`` on 127.0.0.1 (state in memory: a restart empties it)."""

    name = "s3"
    binaries = ()

    def __init__(self) -> None:
        super().__init__()
        self.access_key = ""
        self.secret_key = ""

    def ensure_binaries(self) -> dict[str, str]:
        """This interpreter, once it can import ``moto.server``."""
        if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
            raise ServiceNotStarted("moto server mode missing: pip install 'moto[server]>=5'")
        return {"python": sys.executable}

    @property
    def endpoint(self) -> str:
        """The server's HTTP endpoint."""
        return f"http://{self.host}:{self.port}"

    def url(self, bucket: str, prefix: str = "") -> str:
        """The ``s3://`` archive URL of ``bucket``/``prefix`` on this server (keys from env)."""
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}"

    def env(self) -> dict[str, str]:
        """The environment variables ``open_blobs`` reads the test keys from."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def blobs(self, bucket: str, prefix: str = "") -> S3Blobs:
        """An ``S3Blobs`` on ``bucket`` of this server (the bucket may not exist yet)."""
        from chronik.archive.s3 import S3Blobs

        return S3Blobs(
            self.endpoint, bucket, prefix, access_key=self.access_key, secret_key=self.secret_key
        )

    def _prepare(self, workdir: Path) -> None:
        pass

    def _start(self) -> None:
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
        self._spawn(
            [self.bin["python"], "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            env=env,
        )
        self._iam("CreateUser", UserName=_USER)
        self._iam("PutUserPolicy", UserName=_USER, PolicyName="all", PolicyDocument=_POLICY)
        created = self._iam("CreateAccessKey", UserName=_USER)
        self.access_key = created.findtext(f".//{_IAM_NS}AccessKeyId") or ""
        self.secret_key = created.findtext(f".//{_IAM_NS}SecretAccessKey") or ""
        if not self.access_key or not self.secret_key:
            raise ServiceNotStarted("moto IAM returned no access key")

    def _iam(self, action: str, **params: str) -> ET.Element:
        """One call of moto's IAM query API (unauthenticated: among the first three)."""
        body = urlencode({"Action": action, "Version": "2010-05-08", **params})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(
                "POST",
                "/",
                body,
                {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Authorization": "AWS4-HMAC-SHA256 Credential=x/20240101/us-east-1/iam/"
                    "aws4_request, SignedHeaders=host, Signature=0",
                },
            )
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ServiceNotStarted(f"moto IAM {action} failed: {exc}") from exc
        finally:
            conn.close()
        if response.status != 200:
            raise ServiceNotStarted(f"moto IAM {action}: HTTP {response.status} {data[:300]!r}")
        return ET.fromstring(data)

    def _ready(self) -> bool:
        """The server answers an HTTP request."""
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
            try:
                conn.request("GET", "/moto-api/")
                return conn.getresponse().status < 500
            finally:
                conn.close()
        return False


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Service]:
    """A moto S3 server for the whole session (tests use fresh buckets)."""
    service = S3Service()
    try:
        service.start()
    except ServiceNotStarted as exc:
        service.stop()
        unavailable(f"S3 (moto server) unavailable: {exc}")
    try:
        yield service
    finally:
        service.stop()
