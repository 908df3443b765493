"""A projection: a name, the event types it handles, its read-model tables, its error policy."""

from __future__ import annotations

import inspect
import re
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from chronik.dcb import Query
from chronik.errors import ConfigurationError, ValidationError
from chronik.messages import Position, RecordedEvent, StreamId
from chronik.projections.readmodel import ReadModel, Table
from chronik.replay_marks import mark_write
from chronik.store.tenant_reads import check_tenant_filter

if TYPE_CHECKING:
    from chronik.store.base import EventStore
    from chronik.store.records import ReadPage

__all__ = ["ErrorPolicy", "Handler", "Projection"]

Handler: TypeAlias = Callable[[RecordedEvent, ReadModel], Awaitable[None] | None]
_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,47}")


class ErrorPolicy:
    """What a processor does when a handler raises.

    It retries the event ``retries`` times, waiting ``backoff`` seconds doubled each time (at
    most ``max_backoff``), then: ``park`` puts the event and the later events of its stream in
    the dead-letter table while other streams go on; ``skip`` records the error and moves on;
    ``stop`` stops the projection before the event (state ``stopped``, ``last_error`` set).
    """

    def __init__(
        self,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        then: Literal["park", "skip", "stop"] = "park",
    ) -> None:
        if type(retries) is not int or retries < 0:
            raise ValidationError(f"retries must be an int >= 0, got {retries!r}")
        if backoff < 0 or max_backoff < 0:
            raise ValidationError("backoff times must be >= 0")
        if then not in ("park", "skip", "stop"):
            raise ValidationError(f"then must be 'park', 'skip' or 'stop', got {then!r}")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.then = then

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))

    def __repr__(self) -> str:
        return f"ErrorPolicy(retries={self.retries}, backoff={self.backoff}, then={self.then!r})"


class Projection:
    """Events in, read-model rows out: ``Projection("receipts", tables=[...])``.

    Register handlers with ``@projection.on("order.completed")``; a handler takes the event and
    a ``ReadModel`` and may be a plain or an async function. Bump ``version`` when the handlers
    or tables change: the new version builds into new tables while the old ones keep serving,
    and takes over once caught up. A projection without tables has effects elsewhere (email,
    HTTP): it gets each event at least once, with ``rm.event_id`` as the idempotency key.

    ``partitions=N`` splits the events by stream hash; each partition has its own lease,
    checkpoint, status and dead letters, and ``PartitionWorker``s in several processes share
    the partitions out (see chronik.projections.workers). Rows must then be keyed per stream
    (two partitions never write one row). A rebuild, a reset to the start or a new version moves
    every partition to a new generation of the tables together (see chronik.projections.plan);
    a new partition count is built by a rebuild or with a new version.

    ``query=chronik.Query(...)`` follows only the events the query matches (by type and tags,
    as ``store.read_query`` finds them) among those of the handled types. ``tenant="acme"``
    follows one tenant's events only (the store's tenant filter); ``per_tenant`` tables keep
    every tenant's rows apart either way.

    ``replay="refuse"`` declares handlers whose effects outside chronik cannot be repeated (an
    email, a payment): once the projection has handled an event, a rebuild or a reset to an
    earlier position is refused (``ReplayRefused``) instead of running them again. The default
    ``"repeat"`` suits read models (and effects keyed by ``rm.event_id``). Sagas and reactions
    need neither: they record what they sent and replay from the record (chronik.saga_record).
    """

    def __init__(
        self,
        name: str,
        *,
        tables: Iterable[Table] = (),
        version: int = 1,
        policy: ErrorPolicy | None = None,
        domains: Sequence[str] | None = None,
        batch_size: int = 500,
        partitions: int = 1,
        replay: Literal["repeat", "refuse"] = "repeat",
        query: Query | None = None,
        tenant: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ValidationError(
                f"invalid projection name {name!r}: expected [a-z][a-z0-9_]{{0,47}}", field="name"
            )
        if type(version) is not int or version < 1:
            raise ValidationError(f"version must be an int >= 1, got {version!r}")
        if type(batch_size) is not int or not 1 <= batch_size <= 10_000:
            raise ValidationError(f"batch_size must be 1..10000, got {batch_size!r}")
        if type(partitions) is not int or not 1 <= partitions <= 256:
            raise ValidationError(f"partitions must be 1..256, got {partitions!r}")
        if replay not in ("repeat", "refuse"):
            raise ValidationError(
                f"replay must be 'repeat' or 'refuse', got {replay!r}", field="replay"
            )
        if query is not None and not isinstance(query, Query):
            raise ValidationError(f"query must be a chronik.Query, got {query!r}", field="query")
        check_tenant_filter(tenant)
        self.name = name
        self.tenant = tenant
        self.query = query
        self.replay = replay
        self.partitions = partitions
        self.version = version
        self.tables: dict[str, Table] = {}
        for t in tables:
            if not isinstance(t, Table):
                raise ValidationError(f"expected a Table, got {t!r}", field="tables")
            if t.name in self.tables:
                raise ValidationError(f"table {t.name!r} is declared twice", field="tables")
            self.tables[t.name] = t
        self.policy = policy or ErrorPolicy()
        self.domains = tuple(domains) if domains is not None else None
        self.batch_size = batch_size
        self.handlers: dict[str, tuple[Handler, bool]] = {}

    def on(self, *types: str) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of these event types."""
        if not types:
            raise ValidationError("on() needs at least one event type")

        def register(fn: Handler) -> Handler:
            run = self._guarded(fn) if self.replay == "refuse" else fn
            for t in types:
                if t in self.handlers:
                    raise ConfigurationError(f"{self.name}: {t!r} already has a handler")
                self.handlers[t] = (run, inspect.iscoroutinefunction(run))
            return fn

        return register

    def _guarded(self, fn: Handler) -> Handler:
        """``fn``, staging the projection's replay mark (with its refusal) before each event."""
        reason = f"projection {self.name} declared replay='refuse'"

        async def guarded(event: RecordedEvent, rm: ReadModel) -> None:
            partition = self.partition_of(event.stream)
            rm.writes.append(mark_write(self.name, partition, rm.generation, event, reason))
            result = fn(event, rm)
            if inspect.isawaitable(result):
                await result

        return guarded

    def partition_of(self, stream: StreamId) -> int:
        """The partition of a stream: a stable hash of its id, modulo ``partitions``."""
        if self.partitions == 1:
            return 0
        key = f"{stream.tenant}/{stream.domain}/{stream.aggregate_id}".encode()
        return zlib.crc32(key) % self.partitions

    async def read_page(
        self, store: EventStore, after: Position | None, limit: int, types: tuple[str, ...] | None
    ) -> ReadPage:
        """The next page of what this projection follows: its domains and tenant, ``types``."""
        return await store.read_page(after, limit, self.domains, types, self.tenant)

    @property
    def types(self) -> tuple[str, ...]:
        """The event types this projection handles (it reads no others)."""
        return tuple(self.handlers)

    async def handle(self, event: RecordedEvent, rm: ReadModel) -> None:
        """Run the handler of ``event``'s type."""
        fn, is_async = self.handlers[event.type]
        result: Any = fn(event, rm)
        if is_async:
            await result

    def __repr__(self) -> str:
        return f"<Projection {self.name} v{self.version} types={len(self.handlers)}>"
