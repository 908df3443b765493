"""The JetStream KV bucket under ``NatsMembershipBackend``: connection, bucket and the few
raw operations the lease needs, with the server's timestamps, nats-py errors translated.

``KvBucket`` connects on first use (the client reconnects by itself, with no publish buffer
while disconnected: a call then fails at once) and creates the bucket on the first write
(file storage, one revision per key, ``max_age``). Every call that cannot reach the server
raises TransportUnavailable; a write whose expected revision is not the key's last returns
None (another writer came first) instead of raising.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any, Final
from urllib.parse import urlsplit

from chronik.bounded_close import close_within
from chronik.cluster.config import MAX_TTL, check_bucket, check_nats_url, check_seconds
from chronik.errors import MissingExtraError, TransportUnavailable, ValidationError

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
    from nats.js import JetStreamContext
    from nats.js.api import KeyValueConfig, StorageType
    from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue
except ImportError:  # pragma: no cover - the extra is installed in the test environment
    raise MissingExtraError("nats", "nats-py") from None

__all__ = ["KvBucket", "NATS_ERRORS"]

NATS_ERRORS: Final = (nats.errors.Error, TimeoutError, OSError)
_WRONG_LAST: Final = (10071, 10164)  # JetStream: wrong last (subject) sequence
_EXPECTED: Final = "Nats-Expected-Last-Subject-Sequence"
#: watches of a prefix that saw nothing, while the bucket holds values, before empty is believed
EMPTY_READS: Final = 3


def _us(when: datetime.datetime) -> int:
    return int(when.timestamp() * 1_000_000)


async def _quiet(exc: Exception) -> None:
    """nats-py reports connection errors here while it reconnects: the callers see them."""


class _Moved(Exception):
    """A write's expected revision was not the key's last one."""


class KvBucket:
    """The KV bucket ``bucket`` of the NATS server at ``url``, by raw messages."""

    def __init__(
        self,
        url: str,
        bucket: str,
        *,
        max_age: float = 86400.0,
        replicas: int = 1,
        timeout: float = 5.0,
    ) -> None:
        self.url = check_nats_url(url)
        self.bucket = check_bucket(bucket)
        self.stream = f"KV_{self.bucket}"  # the JetStream stream behind the bucket
        self.subject = f"$KV.{self.bucket}."
        #: seconds after which the server drops a record nobody rewrote (> twice any ttl)
        self.max_age = check_seconds(max_age, "max_age", 2 * MAX_TTL, 3650 * 86400.0)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 5:
            raise ValidationError(f"invalid replicas {replicas!r}: expected 1..5", field="replicas")
        self.replicas = replicas
        self.timeout = check_seconds(timeout, "timeout", 0.1, 60.0)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._lock = asyncio.Lock()
        self.closed = False

    async def _connect(self) -> JetStreamContext:
        if self.closed:
            raise TransportUnavailable(f"NATS membership at {self.where()} is closed")
        if self._js is not None:
            return self._js
        try:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    self.url,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    connect_timeout=min(2.0, self.timeout),
                    error_cb=_quiet,
                    pending_size=0,  # nothing buffered while disconnected: a call fails now
                ),
                3 * self.timeout,
            )
        except (*NATS_ERRORS, nats.errors.NoServersError) as exc:
            raise TransportUnavailable(f"NATS membership at {self.where()}: {exc!r}") from exc
        self._js = self._nc.jetstream(timeout=self.timeout)
        return self._js

    async def exists(self, create: bool) -> bool:
        """Whether the bucket exists (created first when ``create``)."""
        if self._kv is not None:
            return True
        async with self._lock:
            if self._kv is None:
                js = await self._connect()
                try:
                    self._kv = await self._call(js.key_value(self.bucket))
                except nats.js.errors.BucketNotFoundError:
                    if not create:
                        return False
                    self._kv = await self._call(self._create(js))
            return True

    async def _create(self, js: JetStreamContext) -> KeyValue:
        config = KeyValueConfig(
            bucket=self.bucket,
            description="chronik cluster membership",
            history=1,
            ttl=self.max_age,
            storage=StorageType.FILE,
            replicas=self.replicas,
        )
        try:
            return await js.create_key_value(config)
        except nats.js.errors.BadRequestError:  # created meanwhile (another config): use it
            return await js.key_value(self.bucket)

    async def _call(self, awaitable: Any) -> Any:
        """Await a NATS call, its connection errors translated to TransportUnavailable."""
        try:
            return await awaitable
        except nats.js.errors.NotFoundError:  # no such message (or bucket): the caller's case
            raise
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST:
                raise _Moved from exc
            raise TransportUnavailable(f"NATS membership: {exc!r}") from exc
        except NATS_ERRORS as exc:
            raise TransportUnavailable(
                f"NATS membership at {self.where()}: {exc!r}", outcome_unknown=True
            ) from exc

    async def last(self, key: str) -> tuple[int, bytes | None, int] | None:
        """The key's last revision, its value (None: a delete marker) and its server time
        (microseconds since the epoch); None when the key has no message."""
        js = await self._connect()
        try:
            msg = await self._call(js.get_msg(self.stream, subject=self.subject + key))
        except nats.js.errors.NotFoundError:
            return None
        deleted = bool(msg.headers) and msg.headers.get(KV_OP) in (KV_DEL, KV_PURGE)
        return msg.seq, None if deleted else (msg.data or b""), _us(msg.time)

    async def put(
        self, key: str, body: bytes, expected: int | None, *, delete: bool = False
    ) -> int | None:
        """Write ``body`` under ``key`` (``delete``: a delete marker) if ``expected`` (None:
        any) is its last revision (0: none); the new revision, None if the key moved on."""
        await self.exists(create=True)
        js = await self._connect()
        headers = {} if expected is None else {_EXPECTED: str(expected)}
        if delete:
            headers[KV_OP] = KV_DEL
        try:
            ack = await self._call(
                js.publish(self.subject + key, body, timeout=self.timeout, headers=headers or None)
            )
        except _Moved:
            return None
        seq: int = ack.seq
        return seq

    async def time_of(self, seq: int) -> int | None:
        """The server time of the message at revision ``seq`` (None: replaced since)."""
        js = await self._connect()
        try:
            msg = await self._call(js.get_msg(self.stream, seq=seq))
        except nats.js.errors.NotFoundError:
            return None
        return _us(msg.time)

    async def entries(self, prefix: str) -> list[tuple[str, int, bytes, int]]:
        """(key, revision, value, server time) of the last revision of every key under
        ``prefix`` that is not deleted.

        nats-py's watcher may say "caught up" before the entries its consumer has already
        been sent (it compares the consumer's pending count, 0 once they are sent, with what
        it has handed out): a read that saw nothing while the bucket holds values reads again.
        """
        assert self._kv is not None, "call exists() first"
        try:
            for _ in range(EMPTY_READS):
                seen, out = await self._watch_once(prefix)
                if seen or not (await self._call(self._kv.status())).values:
                    break
        except TimeoutError as exc:
            raise TransportUnavailable(f"NATS membership: reading {self.bucket} timed out") from exc
        except NATS_ERRORS as exc:
            raise TransportUnavailable(f"NATS membership: {exc!r}") from exc
        return out

    async def _watch_once(self, prefix: str) -> tuple[int, list[tuple[str, int, bytes, int]]]:
        """One watch of ``prefix``: how many entries it gave (deletions too), and the live ones."""
        assert self._kv is not None
        seen, out = 0, []
        watcher = await self._call(self._kv.watch(f"{prefix}>"))
        try:
            async with asyncio.timeout(self.timeout):
                async for entry in watcher:
                    if entry is None:  # caught up: every key's last revision seen
                        break
                    seen += 1
                    if entry.operation not in (KV_DEL, KV_PURGE):
                        value = entry.value or b""
                        out.append((entry.key, entry.revision or 0, value, _us(entry.created)))
        finally:
            await watcher.stop()
        return seen, out

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        self.closed = True
        nc, self._nc, self._js, self._kv = self._nc, None, None, None
        if nc is not None:
            await close_within(nc.close(), 5, f"NATS membership at {self.where()}", *NATS_ERRORS)

    @property
    def connected(self) -> bool:
        """Whether a connection was made (and not closed)."""
        return self._nc is not None

    def where(self) -> str:
        """The server, without credentials."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 4222}"
