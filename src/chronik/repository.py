"""Load aggregates (snapshot + tail, upcast), keep recent ones; snapshots off the hot path.

Events reach a model's state only here: through ``load`` (stored events) and ``settle`` (the
events a command just decided). Both leave out chronik's own deadline events
(``chronik.deadline_events.is_deadline_event``), which the repository registers in its registry.

A stored event that no longer decodes fails the load with UndecodableEvent (from the registry),
naming the event and the repair. A snapshot is a cache: one that is missing, corrupt, of another
state type or of another schema version is ignored and the stream replayed in full. The
repository also keeps the last state of recently used streams with their version; the command
bus uses it without a read, because its append checks the version anyway, and drops the entry
whenever an append fails.

Personal data (``chronik.personal``): decoding loads the subject keys it misses from the
registry's key ring and decodes again; a stream that carries an event type with personal
fields is never snapshotted while a key ring is attached (a snapshot would hold the opened
values in clear, out of reach of ``forget``), so such streams always replay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from operator import itemgetter
from typing import Any

import msgspec

from chronik.codec import EventRegistry
from chronik.deadline_events import INTERNAL_EVENTS, is_deadline_event
from chronik.domain_model import DomainModel
from chronik.errors import KeyNotLoaded
from chronik.messages import JSON, Command, RecordedEvent, Snapshot, StreamId
from chronik.store.base import EventStore
from chronik.store.read import READ_PAGE
from chronik.store.runs import RunKeys, key_type, skip

_INTERNAL_TYPES: frozenset[str] = frozenset(INTERNAL_EVENTS.values())
_NO_OWN_SNAPSHOTS: Any = DomainModel.snapshot_after  # a model that does not override it

__all__ = ["Loaded", "Repository"]

log = logging.getLogger("chronik.repository")


class Loaded(msgspec.Struct):
    """An aggregate's state at ``version`` (None: no events yet)."""

    state: Any
    version: int | None
    snapshot_sequence: int | None = None  # the newest snapshot known for the stream
    replayed: int = 0  # events folded by this load
    load_ms: float = 0.0
    personal: bool = False  # the stream carries personal fields: never snapshotted


class Repository:
    """Loads and caches aggregate states of one store; saves snapshots in the background."""

    def __init__(
        self, store: EventStore, registry: EventRegistry, cache_size: int = 10_000
    ) -> None:
        self.store = store
        self.registry = registry
        self.cache_size = cache_size
        self._cache: OrderedDict[StreamId, Loaded] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._fast_source: object = None  # the registry's decoders that _fast was made from
        self._fast: Mapping[str, tuple[int, Callable[[bytes], Any]]] = {}
        self._keys = RunKeys({})  # the keys of the store's runs, made from _fast
        self._streams: dict[tuple[str, str, str], StreamId] = {}  # checked lately: stream_of
        # the store's runs (chronik.store.runs), if it reads them
        self._run: Callable[[StreamId, int, int, int], Awaitable[Any]] | None = getattr(
            store, "read_stream_run", None
        )
        for cls, name in INTERNAL_EVENTS.items():  # deadlines that aggregates schedule
            if name not in registry:
                registry.register(cls, name)

    async def load(self, model: DomainModel, stream: StreamId, use_cache: bool = True) -> Loaded:
        """The stream's state: from the cache, else the latest usable snapshot plus the tail."""
        if use_cache:
            hit = self.cached(stream)
            if hit is not None:
                return hit
        start = time.perf_counter()
        state: Any = None
        version: int | None = None
        snap_seq: int | None = None
        snapshot = await self.store.load_snapshot(stream) if model.snapshots else None
        if snapshot is not None:
            snap_seq = snapshot.sequence
            if (snapshot.type, snapshot.schema_version) == (model.state_type, model.state_version):
                try:
                    state = model.decode_state(snapshot)
                    version = snapshot.sequence
                except (
                    msgspec.DecodeError,
                    msgspec.ValidationError,
                    TypeError,
                    ValueError,
                    RecursionError,
                ) as exc:
                    log.warning("ignoring unreadable snapshot of %s: %s", stream, exc)
        if version is None:
            state = model.initial(stream.aggregate_id)
        replayed = 0
        evolve = model.evolver()
        from_sequence = None if version is None else version + 1
        fast = self.registry.current_decoders() if model.typed_events else None
        personal = self._personal_types()
        carries = False
        if fast is not None:  # payload rows first; whole events from the first that needs them
            state, version, replayed, from_sequence, carries = await self._fold_rows(
                stream, evolve, state, version, from_sequence, fast
            )
            if from_sequence is None:
                ms = (time.perf_counter() - start) * 1000
                return Loaded(state, version, snap_seq, replayed, ms, carries)
        # typed: the registry's decoder straight away for current JSON payloads; the rest (and
        # failures, to raise UndecodableEvent) through _decode. Deadline events are left out.
        async for event in self.store.read_stream(stream, from_sequence):
            if fast is None:
                decoded: Any = event
            else:
                current = fast.get(event.type)
                if (
                    current is None
                    or current[0] != event.schema_version
                    or event.content_type != JSON
                ):
                    decoded = self._decode(event)
                else:
                    try:
                        decoded = await self._keyed(current[1], event.payload)
                    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                        decoded = self._decode(event)
            if personal and event.type in personal:
                carries = True
            if not is_deadline_event(decoded):
                state = evolve(state, decoded)
            version = event.sequence
            replayed += 1
        ms = (time.perf_counter() - start) * 1000
        return Loaded(state, version, snap_seq, replayed, ms, carries)

    def stream_of(self, command: Command) -> StreamId:
        """``command.stream`` (InvalidStreamId for bad names), kept for the next commands of
        the same names (at most ``cache_size`` names, then forgotten at once)."""
        key = (command.domain, command.aggregate_id, command.tenant)
        try:
            return self._streams[key]
        except (KeyError, TypeError):  # TypeError: a name that is not a string
            stream = command.stream
        if len(self._streams) >= max(self.cache_size, 1):
            self._streams.clear()
        self._streams[key] = stream
        return stream

    def cached(self, stream: StreamId) -> Loaded | None:
        """The stream's cached state (now the most recently used), or None."""
        hit = self._cache.get(stream)
        if hit is not None:
            self._cache.move_to_end(stream)
        return hit

    def _personal_types(self) -> frozenset[str]:
        """The registry's personal types while a key ring is attached (else none)."""
        return self.registry.personal_types() if self.registry.keys is not None else frozenset()

    def carries_personal(self, events: list[Any]) -> bool:
        """Whether any of these (EventData / PreparedEvent / RecordedEvent) has personal fields."""
        personal = self._personal_types()
        return bool(personal) and any(e.type in personal for e in events)

    async def _keyed(self, decode: Callable[[bytes], Any], payload: bytes) -> Any:
        """``decode(payload)``, loading each personal-data key it misses from the key ring."""
        while True:
            try:
                return decode(payload)
            except KeyNotLoaded as miss:
                if self.registry.keys is None:
                    raise
                await self.registry.keys.load([miss.subject])

    async def _fold_rows(
        self,
        stream: StreamId,
        evolve: Callable[[Any, Any], Any],
        state: Any,
        version: int | None,
        from_sequence: int | None,
        fast: Mapping[str, tuple[int, Callable[[bytes], Any]]],
    ) -> tuple[Any, int | None, int, int | None, bool]:
        """Fold the stream's current-version JSON events straight from payload rows (no event
        objects): (state, version, events folded, the sequence from which whole events must
        be read: one that needs an upcast, another content type or fails to decode; None when
        the stream ended; whether a folded event has personal fields). A store that reads runs
        (``chronik.store.runs``: pages without sequences, each row's key naming its decoder)
        is read in runs; a page that is not one is read as payload rows."""
        replayed, cursor, internal, carries = 0, from_sequence or 0, _INTERNAL_TYPES, False
        get = self._logic(fast).get
        run, keys = self._run, self._keys
        while True:
            page = None if run is None else await run(stream, cursor, READ_PAGE, keys.version)
            if page is not None:  # (key, payload) rows of sequences first, first + 1, ...
                first, ended, rows = page
                known = keys.known.get
                for key, payload in rows:
                    decode = known(key)
                    if decode is None:
                        decode = keys.odd(key)
                        if decode is None:
                            return state, *self._run_stop(page, payload, version, replayed, carries)
                        if decode is skip:  # chronik's deadline events: not the logic's
                            continue
                    try:
                        decoded = decode(payload)
                    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                        return state, *self._run_stop(page, payload, version, replayed, carries)
                    except KeyNotLoaded:
                        decoded = await self._keyed(decode, payload)
                    state = evolve(state, decoded)
                if rows:
                    version = first + len(rows) - 1
                    replayed += len(rows)
                    carries = self._carries(rows, carries, _run_type)
                if ended:
                    return state, version, replayed, None, carries
                cursor = first + len(rows)
                continue
            rows = await self.store.read_stream_payloads(stream, cursor, READ_PAGE)
            for sequence, type_, json_version, payload in rows:
                current = get(type_)
                if current is None or current[0] != json_version:  # (or not JSON)
                    if type_ not in internal:  # chronik's deadline events: not the logic's
                        return state, version, *self._stop(rows, sequence, replayed, carries)
                else:
                    try:
                        decoded = current[1](payload)
                    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                        return state, version, *self._stop(rows, sequence, replayed, carries)
                    except KeyNotLoaded:
                        decoded = await self._keyed(current[1], payload)
                    state = evolve(state, decoded)
                version = sequence
            replayed += len(rows)  # (a return above counts its own)
            carries = self._carries(rows, carries, _second)
            if len(rows) < READ_PAGE:
                return state, version, replayed, None, carries
            cursor = rows[-1][0] + 1

    def _stop(
        self, rows: list[Any], sequence: int, replayed: int, carries: bool
    ) -> tuple[int, int, bool]:
        """(events folded, ``sequence``, whether one has personal fields) when the fast fold
        stops at the row of ``sequence`` of a page that began after ``replayed`` events."""
        done = next(i for i, r in enumerate(rows) if r[0] == sequence)
        return replayed + done, sequence, self._carries(rows[:done], carries, _second)

    def _run_stop(
        self,
        page: tuple[int, bool, list[Any]],
        payload: bytes,
        version: int | None,
        replayed: int,
        carries: bool,
    ) -> tuple[int | None, int, int, bool]:
        """(version, events folded, the sequence to read whole events from, whether a folded
        one has personal fields) when the fast fold stops at the run row of ``payload`` (that
        object: equal rows may repeat) of a page that began after ``replayed`` events."""
        first, _, rows = page
        done = next(i for i, r in enumerate(rows) if r[1] is payload)
        folded = rows[:done]
        version = first + done - 1 if done else version
        return version, replayed + done, first + done, self._carries(folded, carries, _run_type)

    def _carries(self, rows: list[Any], carries: bool, type_of: Callable[[Any], str]) -> bool:
        """Whether an event folded has personal fields: ``carries``, or one of ``rows`` (the
        type of a row: ``type_of(row)``) is of a personal type."""
        if carries:
            return True
        personal = self._personal_types()
        return bool(personal) and any(type_of(r) in personal for r in rows)

    def _logic(
        self, fast: Mapping[str, tuple[int, Callable[[bytes], Any]]]
    ) -> Mapping[str, tuple[int, Callable[[bytes], Any]]]:
        """``fast`` without chronik's deadline events (registered, but never the logic's)."""
        if self._fast_source is not fast:
            self._fast = {k: v for k, v in fast.items() if k not in _INTERNAL_TYPES}
            self._keys = RunKeys(self._fast, _INTERNAL_TYPES)
            self._fast_source = fast
        return self._fast

    def settle(self, model: DomainModel, state: Any, events: list[Any]) -> Any:
        """The state after the events a command decided (chronik's deadline events left out)."""
        for event in events:
            if type(event) in INTERNAL_EVENTS:
                events = [e for e in events if type(e) not in INTERNAL_EVENTS]
                break
        return model.settle(state, events)

    def _decode(self, event: RecordedEvent) -> Any:
        """A registered event as its class; one of a type not registered (a raw EventData the
        logic returned, or appended with store.append) as the RecordedEvent itself."""
        return self.registry.decode(event) if event.type in self.registry else event

    def remember(self, model: DomainModel, stream: StreamId, loaded: Loaded) -> None:
        """Keep a state for the next command on the stream (evicting the least recent)."""
        if self.cache_size <= 0 or not model.cacheable:
            return
        self._cache[stream] = loaded
        self._cache.move_to_end(stream)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def forget(self, stream: StreamId) -> None:
        """Drop a cached state (after a failed or unknown append)."""
        self._cache.pop(stream, None)

    def clear(self) -> None:
        """Drop every cached state."""
        self._cache.clear()

    def maybe_snapshot(self, model: DomainModel, stream: StreamId, loaded: Loaded) -> None:
        """Snapshot ``loaded`` in the background if the model's policy asks for it (never a
        stream with personal fields: see the module docstring)."""
        if loaded.personal:
            return
        if loaded.version is not None and type(model).snapshot_after is not _NO_OWN_SNAPSHOTS:
            own = model.snapshot_after(loaded.state, stream, loaded.version)
            if own is not None:
                self._spawn(own)
                return
        policy = model.snapshots
        if policy is None or loaded.version is None:
            return
        due = policy.every is not None and (
            loaded.version - (-1 if loaded.snapshot_sequence is None else loaded.snapshot_sequence)
            >= policy.every
        )
        if not due and policy.slower_than_ms is not None:
            due = loaded.load_ms > policy.slower_than_ms and loaded.replayed > 0
        if not due:
            return
        try:  # encoded now: the state object may change with the next command
            state = model.encode_state(loaded.state)
        except (TypeError, ValueError, msgspec.EncodeError, RecursionError) as exc:
            log.warning("cannot snapshot %s: %s", stream, exc)
            return
        loaded.snapshot_sequence = loaded.version
        loaded.load_ms = 0.0
        self._spawn(Snapshot(stream, loaded.version, model.state_type, model.state_version, state))

    def _spawn(self, snapshot: Snapshot) -> None:
        task = asyncio.get_running_loop().create_task(self._save(snapshot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _save(self, snapshot: Snapshot) -> None:
        try:
            await self.store.save_snapshot(snapshot)
        except Exception as exc:  # a snapshot is a cache: losing one is harmless
            log.warning("snapshot of %s not saved: %s", snapshot.stream, exc)

    async def drain(self) -> None:
        """Wait for pending snapshot writes."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


_second = itemgetter(1)  # the type of a payload row


def _run_type(row: Any) -> str:
    """The type of a run row."""
    return key_type(row[0])
