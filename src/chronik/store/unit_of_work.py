"""The unit of work: appends, checkpoints, snapshots, table writes and leases, all or nothing.

``store.transaction()`` makes one; everything added is checked at once (a ValidationError
naming the field) and handed to the adapter as one ``WriteUnit`` at commit, with the checks
the unit must pass first: DCB append conditions (``append_tagged``) and check-only stream
expectations (``expect``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Self

from chronik.dcb import AppendCondition
from chronik.errors import InvalidExpectedVersion, ValidationError
from chronik.messages import (
    ANY,
    AppendResult,
    Checkpoint,
    EventData,
    Expected,
    ExpectedState,
    Position,
    Snapshot,
    StreamId,
)
from chronik.store.deletion import STREAM_DELETED, prepare_delete
from chronik.store.leases import check_lease
from chronik.store.records import (
    AppendRequest,
    ConditionCheck,
    LeaseOp,
    StreamCheck,
    StreamDelete,
    TableWrite,
    WriteUnit,
    merge_tagged,
)
from chronik.store.tables import check_all, check_table_write, check_values
from chronik.store.validation import check_checkpoint

if TYPE_CHECKING:
    from chronik.store.base import EventStore

__all__ = ["UnitOfWork"]


class UnitOfWork:
    """Appends to several streams committed as one transaction; use with ``async with``."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._requests: list[AppendRequest] = []
        self._checkpoints: list[Checkpoint] = []
        self._snapshots: list[Snapshot] = []
        self._tables: list[TableWrite] = []
        self._leases: list[LeaseOp] = []
        self._conditions: list[ConditionCheck] = []
        self._expects: list[tuple[StreamId, Expected]] = []
        self._deletes: list[StreamDelete] = []
        self._event_ids: set[str] = set()
        self._tagged: dict[int, int] = {}  # first request of a tagged append -> its length
        self._results: list[AppendResult] | None = None

    def _open(self) -> None:
        if self._results is not None:
            raise ValidationError("this unit of work is already committed")

    def append(
        self, stream: StreamId, events: Iterable[EventData], expected: Expected = ANY
    ) -> None:
        """Add an append to the unit (validated now, written at commit)."""
        self.append_prepared(self._store.prepare(stream, events, expected))

    def append_prepared(self, request: AppendRequest) -> None:
        """Add an append made by ``EventStore.prepare``."""
        self._open()
        ids = {e.event_id for e in request.events}
        if not ids.isdisjoint(self._event_ids):
            raise ValidationError("the same event id appears twice in one unit of work")
        self._event_ids |= ids
        self._requests.append(request)

    def delete_stream(
        self,
        stream: StreamId,
        expected: Expected = ANY,
        *,
        hard: bool = False,
        event_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Add a soft or ``hard`` delete of ``stream`` (``EventStore.delete_stream``): its
        deletion event counts as one append of the unit (one result)."""
        self._store._require_deletion()
        self.append_prepared(
            prepare_delete(
                stream, expected, hard, event_id, metadata, self._store.max_payload_bytes
            )
        )
        self._deletes.append(StreamDelete(len(self._requests) - 1, hard))

    def delete_prepared(self, request: AppendRequest, hard: bool) -> None:
        """Add a delete whose deletion event is encoded already (an import of a stored one):
        ``request`` appends one ``chronik.stream_deleted`` event, kept byte for byte."""
        self._store._require_deletion()
        if type(hard) is not bool:
            raise ValidationError(f"hard must be a bool, got {hard!r}", field="hard")
        if len(request.events) != 1 or request.events[0].type != STREAM_DELETED:
            raise ValidationError(f"a delete appends one {STREAM_DELETED} event", field="events")
        self.append_prepared(request)
        self._deletes.append(StreamDelete(len(self._requests) - 1, hard))

    def append_tagged(
        self,
        events: Iterable[EventData],
        condition: AppendCondition | None = None,
        *,
        domain: str = "dcb",
        tenant: str = "",
    ) -> None:
        """Add a tagged append (``EventStore.append_tagged``): the whole unit fails with
        AppendConditionFailed when the condition does, checked against the store before the
        unit's own writes."""
        self.append_tagged_prepared(*self._store.prepare_tagged(events, condition, domain, tenant))

    def append_tagged_prepared(
        self, requests: list[AppendRequest], check: ConditionCheck | None
    ) -> None:
        """Add a tagged append made by ``EventStore.prepare_tagged``."""
        self._open()
        start = len(self._requests)
        for request in requests:
            self.append_prepared(request)
        self._tagged[start] = len(requests)
        if check is not None:
            self._conditions.append(check)

    def expect(self, stream: StreamId, expected: Expected) -> None:
        """Fail the unit (WrongExpectedVersion) unless ``stream`` is at ``expected`` when it
        commits; a check only, for a stream the unit reads but does not write."""
        self._open()
        if not isinstance(stream, StreamId):
            raise ValidationError(f"stream must be a StreamId, got {stream!r}", field="stream")
        if not isinstance(expected, ExpectedState) and (type(expected) is not int or expected < 0):
            raise InvalidExpectedVersion(
                f"expected must be ANY, NO_STREAM, STREAM_EXISTS or a sequence >= 0, "
                f"got {expected!r}",
                field="expected",
            )
        self._expects.append((stream, expected))

    def save_checkpoint(
        self, name: str, position: Position, partition: int = 0, epoch: int = 0
    ) -> None:
        """Commit a processor's checkpoint with the unit (fenced by ``epoch``)."""
        self._open()
        self._checkpoints.append(check_checkpoint(name, position, partition, epoch))

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Commit a snapshot with the unit."""
        self._open()
        self._snapshots.append(self._store.check_snapshot(snapshot))

    def write_tables(self, writes: Iterable[TableWrite], *, checked: bool = False) -> None:
        """Commit read-model table writes with the unit (validated now, in order).

        ``checked=True`` is for writes whose identifiers were validated when they were made
        (``chronik.projections`` builds them from declared tables): they are not checked again.
        Values are always checked: one no adapter can store (an int outside int64, NaN, a str
        with NUL or a lone surrogate, an unsupported type) raises ReadModelError naming the
        table and column, before anything reaches the database.
        """
        self._open()
        self._store._require_tables()
        if checked:
            self._tables += check_all(writes)
        else:
            self._tables += [check_values(check_table_write(w)) for w in writes]

    def acquire_lease(
        self, name: str, owner: str, ttl: float, partition: int = 0, *, version: int = 0
    ) -> None:
        """Claim or renew a lease with the unit: the unit fails (LeaseHeld) while another
        owner's lease is unexpired; see ``chronik.store.leases``."""
        self._open()
        self._store._require_tables()
        self._leases.append(check_lease("acquire", name, owner, ttl, partition, version))

    def release_lease(self, name: str, owner: str, partition: int = 0) -> None:
        """Let ``owner``'s lease expire when the unit commits."""
        self._open()
        self._store._require_tables()
        self._leases.append(check_lease("release", name, owner, 0.0, partition))

    @property
    def results(self) -> list[AppendResult]:
        """One AppendResult per ``append`` / ``append_tagged``, in order; after commit."""
        if self._results is None:
            raise ValidationError("the unit of work has not been committed")
        return self._results

    async def commit(self) -> list[AppendResult]:
        """Write the unit; raises WrongExpectedVersion naming the stream if any append fails."""
        if self._results is None:
            if (
                self._requests
                or self._checkpoints
                or self._snapshots
                or self._tables
                or self._leases
                or self._expects
            ):
                ids = tuple(e.event_id for r in self._requests for e in r.events)
                await self._store._ready()
                results = await self._store._commit(
                    WriteUnit(
                        self._requests,
                        self._checkpoints,
                        self._snapshots,
                        self._tables,
                        self._leases,
                        self._conditions,
                        [StreamCheck(s, e, ids) for s, e in self._expects],
                        self._deletes,
                    )
                )
                self._results = self._per_call(results)
            else:
                self._results = []
        return self._results

    def _per_call(self, results: list[AppendResult]) -> list[AppendResult]:
        if not self._tagged:
            return results
        out, i = [], 0
        while i < len(results):
            n = self._tagged.get(i, 1)
            out.append(merge_tagged(results[i : i + n]))
            i += n
        return out

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.commit()
