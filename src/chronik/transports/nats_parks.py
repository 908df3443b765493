"""Parked keys of the NATS transport's groups: a JetStream key-value bucket (see
``chronik.transports.parks``).

The bucket ``<stream_prefix>_PARKS`` (created when a consumer with policy ``park`` first
starts) holds one entry per parked key of a group, named by a hash of the group's consumer and
the key, whose value is the parking consumer's id. Entries live for the bucket's TTL (three
``ack_wait``, at least 10 seconds) unless the parking consumer, while it runs, writes them
again; it deletes them when it stops. Imported by scheme from ``chronik.transports.parks``,
never by the NATS transport itself.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from chronik.errors import TransportUnavailable
from chronik.transports.parks import LeasedParks

if TYPE_CHECKING:
    from chronik.transports.nats import NatsTransport

__all__ = ["NatsParks", "open_parks"]

_ERRORS = (nats.errors.Error, TimeoutError, OSError)


async def open_parks(transport: NatsTransport, kind: str, name: str, group: str) -> NatsParks:
    """The parks of one consumer of ``group`` (or of queue ``name``)."""
    js = transport.js()
    bucket = f"{transport.stream_prefix}_PARKS"
    ttl = max(10.0, 3 * transport.ack_wait)
    try:
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(bucket=bucket, history=1, ttl=ttl)
    except _ERRORS as exc:
        raise TransportUnavailable(f"NATS parks bucket {bucket}: {exc!r}") from exc
    return NatsParks(kv, f"{kind}\0{name}\0{group}", ttl)


class NatsParks(LeasedParks):
    """One consumer's parks in the bucket."""

    def __init__(self, kv: KeyValue, channel: str, ttl: float) -> None:
        super().__init__(ttl)
        self.kv = kv
        self.channel = channel

    def _entry(self, key: str) -> str:
        text = f"{self.channel}\0{key}".encode("utf-8", "surrogatepass")
        return hashlib.sha256(text).hexdigest()

    async def _put(self, key: str) -> None:
        try:
            await self.kv.put(self._entry(key), self.owner.encode())
        except _ERRORS as exc:
            raise TransportUnavailable(f"NATS park: {exc!r}") from exc

    async def parked(self, key: str) -> bool:
        try:
            await self.kv.get(self._entry(key))
        except nats.js.errors.KeyNotFoundError:  # also deleted or expired
            return False
        except _ERRORS as exc:
            raise TransportUnavailable(f"NATS parks: {exc!r}") from exc
        return True

    async def _renew(self) -> None:
        for key in list(self.mine):
            await self._put(key)

    async def _remove(self) -> None:
        for key in list(self.mine):
            entry = self._entry(key)
            try:
                found = await self.kv.get(entry)
            except nats.js.errors.KeyNotFoundError:
                continue
            if found.value == self.owner.encode():  # not a later park of another consumer
                await self.kv.delete(entry, last=found.revision)
