"""The key-store port: one data key per personal-data subject, and forgetting it.

Crypto-shredding keeps a random 256-bit key per subject (a customer id, say); every personal
field of that subject's events is encrypted with it (``chronik.personal.envelope``). Forgetting
the subject deletes the key and leaves a tombstone, so every copy of the ciphertext (events,
outbox rows, transport messages, exports, archives) becomes unreadable at once.

Adapters: ``chronik.personal.memory.MemoryKeyStore`` (the reference) and
``chronik.lifecycle.subject_keys.StoreKeyStore`` (the store's own database, every adapter with
read-model tables); ``chronik.testing.conformance_keys`` holds them to one suite.

An external KMS fits the same three methods: ``key_for`` returns the subject's data key in
plaintext (a KMS adapter keeps the data key wrapped by a KMS master key in its own table and
unwraps it here, or asks the KMS for it), ``forget`` destroys it (deletes the wrapped key, or
schedules the KMS key's deletion) and keeps a tombstone, ``forgotten`` reads the tombstone.
chronik never stores a key anywhere else; the ``KeyRing`` caches keys in memory only, for a
bounded time.
"""

from __future__ import annotations

import abc
import re

from chronik.errors import ValidationError

__all__ = ["KEY_BYTES", "MAX_SUBJECT_LENGTH", "KeyStore", "check_subject"]

#: AES-256: every subject key is 32 random bytes
KEY_BYTES = 32
MAX_SUBJECT_LENGTH = 256
_SUBJECT_RE = re.compile(r"[^\x00-\x1f\x7f]{1,256}")


def check_subject(subject: object, field: str = "subject") -> str:
    """``subject`` if it is 1..256 printable characters, else ValidationError naming ``field``."""
    if not isinstance(subject, str) or not _SUBJECT_RE.fullmatch(subject):
        raise ValidationError(
            f"a personal-data subject must be 1..{MAX_SUBJECT_LENGTH} printable characters, "
            f"got {subject!r}",
            field=field,
        )
    return subject


class KeyStore(abc.ABC):
    """Where subject keys live: create on first use, read, forget (delete, keep a tombstone)."""

    @abc.abstractmethod
    async def key_for(self, subject: str, create: bool = False) -> bytes | None:
        """The subject's key; with ``create`` a new random one if it has none. None when the
        subject was forgotten (even with ``create``: a forgotten subject gets no new key) or,
        without ``create``, has no key. Concurrent creators agree on one key."""

    @abc.abstractmethod
    async def forget(self, subject: str) -> bool:
        """Delete the subject's key and keep a tombstone; True if a key was deleted (False: it
        had none, or was forgotten before). Idempotent."""

    @abc.abstractmethod
    async def forgotten(self, subject: str) -> bool:
        """Whether the subject was forgotten (a tombstone exists)."""

    async def close(self) -> None:  # noqa: B027 - most adapters hold nothing of their own
        """Release what the adapter holds (not the store it was given)."""
