"""The envelope a personal field's value becomes: AES-256-GCM under the subject's key.

``{"$enc": "v1", "s": subject, "c": base64(nonce + ciphertext)}``: the plaintext is the field's
JSON value; a fresh 96-bit nonce per value; the associated data binds the event type name, the
field and the subject, so a ciphertext moved to another field, event type or subject fails to
open. The subject travels in clear (it names the key, it is not itself personal: mark a field
personal, never the subject field).
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any, Final

import msgspec

from chronik.errors import DeserializationError, MissingExtraError
from chronik.values import decode_json, encode_json

__all__ = ["ENC", "FORGOTTEN", "VERSION", "is_envelope", "open_value", "seal_value"]

ENC: Final = "$enc"
VERSION: Final = "v1"
#: what a personal ``str`` field decodes to once its subject was forgotten (optional: None)
FORGOTTEN: Final = "[forgotten]"
_NONCE = 12
_ENVELOPE_KEYS: Final = frozenset({ENC, "s", "c"})


def _aead(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - the extra is installed in tests
        raise MissingExtraError("personal", "cryptography") from exc
    return AESGCM(key)


def _associated(type_name: str, field: str, subject: str) -> bytes:
    return f"chronik/{VERSION}\x00{type_name}\x00{field}\x00{subject}".encode()


def is_envelope(value: object) -> bool:
    """Whether ``value`` is an envelope (a dict of exactly ``$enc``, ``s``, ``c``)."""
    return (
        isinstance(value, dict)
        and value.keys() == _ENVELOPE_KEYS
        and value[ENC] == VERSION
        and isinstance(value["s"], str)
        and isinstance(value["c"], str)
    )


def seal_value(key: bytes, subject: str, type_name: str, field: str, value: Any) -> dict[str, str]:
    """The envelope of ``value`` (any JSON value) for ``field`` of ``type_name``."""
    nonce = os.urandom(_NONCE)
    sealed = _aead(key).encrypt(nonce, encode_json(value), _associated(type_name, field, subject))
    return {ENC: VERSION, "s": subject, "c": base64.b64encode(nonce + sealed).decode("ascii")}


def open_value(key: bytes, type_name: str, field: str, envelope: dict[str, str]) -> Any:
    """The JSON value inside ``envelope``; DeserializationError if it does not open (another
    key, field, type or subject, or altered bytes)."""
    from cryptography.exceptions import InvalidTag

    try:
        raw = base64.b64decode(envelope["c"], validate=True)
        plain = _aead(key).decrypt(
            raw[:_NONCE], raw[_NONCE:], _associated(type_name, field, envelope["s"])
        )
        return decode_json(plain)
    except (InvalidTag, binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise DeserializationError(
            f"the personal field {field!r} of {type_name} does not open with its subject's key"
        ) from exc
