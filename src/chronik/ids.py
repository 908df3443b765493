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


def new_event_id() -> str:
    """A new UUIDv7 as canonical text; ids from one process sort in creation order."""
    global _last_ms, _counter
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10))
    with _uuid_lock:
        if ms > _last_ms:
            _last_ms = ms
            _counter = rand >> 70  # a random start in the lower half leaves room to count up
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted within one ms: borrow the next ms
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        counter = _counter
    n = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
