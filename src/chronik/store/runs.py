"""Stream runs: the pages a store's optional ``read_stream_run`` answers for the repository's
fast fold (SQLite: ``chronik.store.sqlite.runs``), and which decoder each of their rows takes.

A run is a page of consecutive sequences whose rows are (key, payload): the key is the event's
type when it is JSON at the run's schema version (the one most of the logic's event types are
at), " type version" when it is JSON at another version and " type" for another content type.
``RunKeys`` answers the decoder for a key, ``skip`` for the types the fold passes over
(chronik's own deadline events: stored, never the logic's) and None where whole events must be
read (an upcast, another content type, a type the registry does not know).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["RunKeys", "key_type", "skip"]

_KNOWN_LIMIT = 256  # odd keys remembered beside the plain ones (then forgotten at once)

Decode = Callable[[bytes], Any]


def skip(payload: bytes) -> Any:  # pragma: no cover - compared by identity, never called
    """The answer for a type the fold passes over (counted, not decoded)."""
    raise AssertionError("skip is a marker")


def key_type(key: str) -> str:
    """The event type of a run row's key."""
    return key.split(" ", 2)[1] if key[:1] == " " else key


class RunKeys:
    """Run keys -> decoders for one mapping of the logic's current decoders (type -> (schema
    version, decoder)); the types in ``passed`` are skipped (never in ``logic``)."""

    def __init__(
        self, logic: Mapping[str, tuple[int, Decode]], passed: frozenset[str] = frozenset()
    ) -> None:
        counts = Counter(version for version, _ in logic.values())
        #: the schema version runs are read at: the most common (the lowest of a tie)
        self.version = min(counts, key=lambda v: (-counts[v], v)) if counts else 1
        self._logic = logic
        self._passed = passed
        self._plain = {t: d for t, (v, d) in logic.items() if v == self.version}
        #: the decoder of a key (the plain keys, then odd ones as they are met), or None
        self.known: dict[str, Decode] = dict(self._plain)

    def odd(self, key: str) -> Decode | None:
        """The decoder of a key not in ``known`` (remembered there), ``skip``, or None."""
        if key[:1] != " ":
            return skip if key in self._passed else None
        parts = key.split(" ")  # ["", type] or ["", type, version]
        if parts[1] in self._passed:
            return skip
        current = self._logic.get(parts[1])
        if len(parts) != 3 or current is None or str(current[0]) != parts[2]:
            return None
        if len(self.known) >= len(self._plain) + _KNOWN_LIMIT:
            self.known = dict(self._plain)
        self.known[key] = current[1]
        return current[1]
