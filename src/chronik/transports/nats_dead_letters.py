"""The NATS JetStream transport's dead letters: messages of the queues stream, by sequence.

A dead letter is a message of ``<prefix>_QUEUES`` on the dead-letter queue's subject (sent
there unpartitioned); its handle is its stream sequence. A page reads them with direct gets
(``next_by_subj`` from a sequence), so browsing consumes nothing; they are deleted by sequence.

A retry publishes the original message to its topic (or queue) subject, through the adapter's
own publish path (so a keyed message reaches its key's partition), then deletes the dead
letter. JetStream cannot address one durable consumer, so a topic's message carries the
``chronik-only-group`` header and the consumers of other groups acknowledge it without
handling it (``chronik.transports.consumer``); the receiving group's handler sees the original
headers. Its ``Nats-Msg-Id`` is derived from the dead letter's sequence, so a second or
concurrent retry within the dedup window is dropped by the server, and only one delete
succeeds: the other retry is a NotFound. Loaded by ``chronik.transports.dead_letters`` for
``nats://`` URLs; imports the NATS adapter.
"""

from __future__ import annotations

import nats.js.errors
from nats.js.api import RawStreamMsg

from chronik.errors import InvalidMessage, TransportUnavailable
from chronik.transports.dead_letters import ONLY_GROUP, StoredDead, redelivery
from chronik.transports.message import Message
from chronik.transports.nats import NATS_ERRORS, NatsTransport

__all__ = ["NatsDeadLetters"]

_ID, _KEY = "Nats-Msg-Id", "Chronik-Key"


class NatsDeadLetters:
    """Dead letters of one ``NatsTransport`` (see the module docstring)."""

    def __init__(self, transport: NatsTransport) -> None:
        self.t = transport

    def _subject(self, queue: str) -> str:
        return f"{self.t._queues}{queue}"

    async def page(self, queue: str, after: str | None, limit: int) -> list[StoredDead]:
        seq = 1 if after is None else _sequence(after, "after") + 1
        subject = self._subject(queue)
        out: list[StoredDead] = []
        while len(out) < limit:
            try:
                raw = await self.t.js().get_msg(
                    self.t.queues_stream, seq=seq, subject=subject, next=True
                )
            except nats.js.errors.NotFoundError:
                break
            except NATS_ERRORS as exc:
                raise TransportUnavailable(f"NATS dead letters: {exc!r}") from exc
            out.append(_stored(queue, raw))
            seq = (raw.seq or seq) + 1
        return out

    async def get(self, queue: str, handle: str) -> StoredDead | None:
        seq = _sequence(handle, "id")
        try:
            raw = await self.t.js().get_msg(self.t.queues_stream, seq=seq)
        except nats.js.errors.NotFoundError:
            return None
        except NATS_ERRORS as exc:
            raise TransportUnavailable(f"NATS dead letters: {exc!r}") from exc
        return _stored(queue, raw) if raw.subject == self._subject(queue) else None

    async def take(self, queue: str, handle: str, retry: bool) -> StoredDead | None:
        stored = await self.get(queue, handle)
        if stored is None:
            return None
        if retry:
            again = redelivery(stored)
            m = again.message
            headers = {**m.headers, ONLY_GROUP: again.group} if again.group else m.headers
            # the id scope names this dead letter: a repeated retry is a duplicate to JetStream
            scoped = Message(
                topic=f"{m.topic}~dead{handle}", body=m.body, id=m.id, headers=headers, key=m.key
            )
            base = self.t._topics if again.group else self.t._queues
            await self.t._put(f"{base}{m.topic}", scoped)
        try:
            deleted = await self.t.js().delete_msg(self.t.queues_stream, int(handle))
        except nats.js.errors.APIError:  # deleted meanwhile (a concurrent retry or drop)
            return None
        except NATS_ERRORS as exc:
            raise TransportUnavailable(f"NATS dead letters: {exc!r}", outcome_unknown=True) from exc
        return stored if deleted else None


def _stored(queue: str, raw: RawStreamMsg) -> StoredDead:
    headers = {str(k): str(v) for k, v in (raw.headers or {}).items()}
    scoped = headers.pop(_ID, "")
    key = headers.pop(_KEY, None)
    body = raw.data or b""
    message_id = scoped.partition(":")[2] or f"nats-{raw.seq}"
    message = Message(topic=queue, body=body, id=message_id, headers=headers, key=key)
    return StoredDead(str(raw.seq), message, len(body))


def _sequence(handle: str, field: str) -> int:
    if not handle.isdigit() or not 0 < len(handle) <= 19 or int(handle) < 1:
        raise InvalidMessage(f"invalid dead letter id {handle!r}: a stream sequence", field=field)
    return int(handle)
