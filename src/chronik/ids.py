"""Ids chronik makes: new event ids (UUIDv7) and the ids derived from a command id.

``chronik.messages`` re-exports ``new_event_id`` and ``chronik.commands`` re-exports
``event_id_for``, where users import them from.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Final

try:  # CPython's own SHA-1: copying its state costs less than copying OpenSSL's
    from _sha1 import sha1 as _sha1  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - a build without it
    from hashlib import sha1 as _sha1

__all__ = ["event_id_for", "new_event_id"]

# --- event ids (UUIDv7, RFC 9562: 48-bit unix ms, then a 12-bit counter, then random) ---------

_uuid_lock = threading.Lock()
_last_ms = 0
_counter = 0
_prefix = ""  # the canonical text of _last_ms and the version: "hhhhhhhh-hhhh-7"
# random bytes drawn 4 KiB at a time (one system call per ~400 ids, not one per id) and kept
# as hex text, 20 digits (10 bytes) per id; a forked child drops what it inherited, so no two
# processes hand out the same bytes
_POOL_BYTES: Final = 4096
_POOL_END: Final = 2 * _POOL_BYTES - 20  # the last offset with 20 digits left
_pool = ""
_taken = _POOL_END + 1
_time_ns: Final = time.time_ns
# the 12-bit counter as text (an index, not a format call per id)
_HEX3: Final = tuple(f"{n:03x}" for n in range(4096))


def _forget_pool() -> None:
    global _pool, _taken
    _pool, _taken = "", _POOL_END + 1


os.register_at_fork(after_in_child=_forget_pool)


def new_event_id() -> str:
    """A new UUIDv7 as canonical text; ids from one process sort in creation order."""
    global _last_ms, _counter, _prefix, _pool, _taken
    ms = _time_ns() // 1_000_000
    with _uuid_lock:
        at = _taken
        if at > _POOL_END:
            _pool, at = os.urandom(_POOL_BYTES).hex(), 0
        _taken = at + 20
        pool = _pool
        if ms > _last_ms:
            _last_ms = ms
            # a random start in the lower quarter of the 12-bit counter leaves room to count up
            _counter = counter = int(pool[at + 16 : at + 20], 16) >> 6
            h = f"{ms:012x}"
            _prefix = f"{h[:8]}-{h[8:]}-7"
        else:
            _counter = counter = _counter + 1
            if counter > 0xFFF:  # counter exhausted within one ms: borrow the next ms
                _last_ms += 1
                _counter = counter = 0
                h = f"{_last_ms:012x}"
                _prefix = f"{h[:8]}-{h[8:]}-7"
        # 62 random bits once the variant takes the top two of digit 17
        return (
            f"{_prefix}{_HEX3[counter]}-{_VARIANT[pool[at]]}{pool[at + 1 : at + 4]}-"
            f"{pool[at + 4 : at + 16]}"
        )


# --- ids derived from a command id (the same on every retry) ----------------------------------

_NAMESPACE: Final = uuid.UUID("6f1d3c52-7a0e-4c3b-9d61-2f8e5b7a9c14")


_NAMESPACE_BYTES: Final = _NAMESPACE.bytes
# the namespace hashed once: each id copies this state and feeds it the name alone
_NAMESPACE_SHA1: Final = _sha1(_NAMESPACE_BYTES)
# the hex digit of byte 8's high nibble with the RFC 4122 variant set (0b10xx)
_VARIANT: Final = {f"{n:x}": f"{0x8 | (n & 0x3):x}" for n in range(16)}


def event_id_for(command_id: str, index: int) -> str:
    """The id of the ``index``-th event a command produces (the same on every retry): the
    UUIDv5 of ``command_id`` and ``index`` (``uuid.uuid5``, built without its UUID object,
    from the namespace's SHA-1 state hashed once)."""
    h = _NAMESPACE_SHA1.copy()
    h.update(f"{command_id}\x00{index}".encode())
    x = h.hexdigest()  # the first 32 digits: version 5 in digit 12, the variant in digit 16
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"
