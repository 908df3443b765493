"""Starting a new stream above sequence 0: the stream as a store holds it once retention
scavenged its first events (``chronik.store.retention``), for an import or a move of a stream
whose prefix is gone in the source (``chronik.lifecycle.importer``).

``store.start_stream_at(stream, sequence)`` records the stream as if its events
``0..sequence-1`` had been scavenged, in the representation scavenging leaves: the stream's
version is ``sequence - 1`` and its truncation point ``sequence``. Like a stream whose every
event was scavenged it reads empty (``stream_version`` is None, an append expects
``NO_STREAM`` or ``ANY``) until its first event lands, which takes ``sequence``; from then on
reads start at ``sequence`` and versions and expectations are the source's. Only a stream that
never held an event may start there: WrongExpectedVersion (expected ``NO_STREAM``) when it
holds or held events, StreamDeleted when it is tombstoned. Starting the same stream at the same
sequence again before an event lands is a no-op (a retry). Adapters with
``supports_deletion`` (memory, SQLite, PostgreSQL) implement it; the others raise NotSupported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chronik.errors import NotSupported, StreamDeleted, ValidationError, WrongExpectedVersion
from chronik.messages import NO_STREAM, StreamId

__all__ = ["StreamStartOps", "check_start"]

_MAX_SEQUENCE = 2**62


def check_start(stream: StreamId, sequence: int, state: tuple[int, bool, bool]) -> bool:
    """Whether a stream in ``state`` (its version or -1, tombstoned, events stored) must be
    changed to start at ``sequence``: False for a retry (it starts there already); raises
    StreamDeleted or WrongExpectedVersion when it cannot start there."""
    version, tombstone, stored = state
    if tombstone:
        raise StreamDeleted(stream)
    if stored or version not in (-1, sequence - 1):
        raise WrongExpectedVersion(stream, NO_STREAM, version if version >= 0 else None)
    return version == -1


class StreamStartOps:
    """The stream-start part of the store port (mixed into ``EventStore``)."""

    if TYPE_CHECKING:  # EventStore's

        async def _ready(self) -> None: ...

        def _require_deletion(self) -> None: ...

    async def start_stream_at(self, stream: StreamId, sequence: int) -> None:
        """Start ``stream``, which never held an event, at ``sequence``: as if its events
        ``0..sequence-1`` had been scavenged (see the module docstring)."""
        if not isinstance(stream, StreamId):
            raise ValidationError(f"expected a StreamId, got {stream!r}", field="stream")
        if type(sequence) is not int or not 0 < sequence < _MAX_SEQUENCE:
            raise ValidationError(
                f"sequence must be an int >= 1, got {sequence!r}", field="sequence"
            )
        self._require_deletion()
        await self._ready()
        await self._start_stream_at(stream, sequence)

    # --- what adapters with supports_deletion implement ---------------------------------------

    async def _start_stream_at(self, stream: StreamId, sequence: int) -> None:
        raise NotSupported("starting a stream above sequence 0", type(self).__name__)
