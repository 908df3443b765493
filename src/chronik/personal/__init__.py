"""Personal data: per-subject keys and crypto-shredding (``chronik gdpr forget``).

Mark fields personal in the registry (``@registry.event(..., personal={"email": "customer_id"})``),
attach a key ring (``registry.use_keys(KeyRing(StoreKeyStore(store)))``, the store-backed key
store being ``chronik.lifecycle.subject_keys.StoreKeyStore``) and the fields are
stored as AES-GCM envelopes under a key per subject; ``forget`` deletes the key, and every copy
of the ciphertext becomes unreadable (decoding yields the field's placeholder). Modules:
``base`` (the KeyStore port), ``memory`` (the reference adapter), ``keyring`` (the cache),
``envelope`` (the cipher), ``fields`` (which fields, sealing and opening), ``redacted`` (what
a redacted event decodes to), ``at_rest`` and ``sealing`` (whole payloads compressed and/or
encrypted at rest, ``registry.at_rest``). What needs a store lives in ``chronik.lifecycle``:
``subject_keys`` (the store-backed adapter), ``forget``, ``verify`` and ``redact`` (the
operator actions).

Imports: chronik.errors, chronik.values and (``sealing`` only) chronik.messages
(``chronik.codec`` imports this package), plus ``cryptography`` lazily (extra ``personal``);
never chronik.store.
"""

from __future__ import annotations

from chronik.personal.base import KeyStore, check_subject
from chronik.personal.envelope import FORGOTTEN, is_envelope
from chronik.personal.keyring import KeyRing
from chronik.personal.memory import MemoryKeyStore

__all__ = [
    "FORGOTTEN",
    "KeyRing",
    "KeyStore",
    "MemoryKeyStore",
    "check_subject",
    "is_envelope",
]
