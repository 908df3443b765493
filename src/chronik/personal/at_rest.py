"""Encryption and compression at rest: whole payloads sealed by the registry, opened on decode.

``AtRest(compress="zlib", keys=AtRestKeys.from_file(path))`` attached with
``registry.use_at_rest(...)`` (config ``codec: {compress: zlib, encrypt: {key_file: ...}}``)
makes ``to_event_data`` store each payload as bytes of content type ``SEALED``: a header
(format version, compression, key id), then the (compressed) JSON, AES-256-GCM encrypted
under the current key when keys are given (a fresh 96-bit nonce each; the associated data
binds the header and the event type). ``decode`` opens a ``SEALED`` row with the key its
header names, so keys rotate by id: put a new key first in the key file, keep the old ones
for the rows they sealed. Rows stored before (content type JSON) read as they always did;
nothing changes on the hot path while no ``AtRest`` is attached.

Key file: one key a line, ``<key id> <base64 of 32 random bytes>``; the first line is the
current key; ``#`` starts a comment. Only ``zlib`` (the standard library) compresses: no other
codec is a dependency of chronik.

Imports: chronik.errors only, plus ``cryptography`` lazily (extra ``personal``).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from chronik.errors import ConfigurationError, DeserializationError, MissingExtraError

__all__ = [
    "COMPRESSIONS",
    "SEALED",
    "AtRest",
    "AtRestConfig",
    "AtRestKeys",
    "EncryptConfig",
    "open_sealed",
]

#: the content type of a sealed payload (compressed and/or encrypted at rest)
SEALED: Final = "application/vnd.chronik.sealed"
#: compression name -> its header byte
COMPRESSIONS: Final = {"none": 0, "zlib": 1}
_VERSION = 1
_NONCE = 12
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _aead(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - the extra is installed in tests
        raise MissingExtraError("personal", "cryptography") from exc
    return AESGCM(key)


class AtRestKeys:
    """Data keys by id; ``current`` seals, every key opens what it sealed."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        for key_id, key in keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise ConfigurationError(
                    f"invalid at-rest key id {key_id!r}: [A-Za-z0-9_.-]{{1,64}}"
                )
            if not isinstance(key, bytes) or len(key) != 32:
                raise ConfigurationError(f"at-rest key {key_id!r} must be 32 bytes (AES-256)")
        if current not in keys:
            raise ConfigurationError(f"the current at-rest key {current!r} is not among the keys")
        self.keys = dict(keys)
        self.current = current
        self._ciphers: dict[str, Any] = {}

    def cipher(self, key_id: str) -> Any:
        """The AES-GCM cipher of ``key_id`` (made once); KeyError if there is no such key."""
        aead = self._ciphers.get(key_id)
        if aead is None:
            aead = self._ciphers[key_id] = _aead(self.keys[key_id])
        return aead

    @classmethod
    def from_file(cls, path: str | Path) -> AtRestKeys:
        """The keys of a key file (see the module docstring); ConfigurationError naming the
        line that does not fit."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the at-rest key file {path}: {exc}") from None
        keys: dict[str, bytes] = {}
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError("expected '<key id> <base64 key>'")
                keys[parts[0]] = base64.b64decode(parts[1], validate=True)
            except (ValueError, binascii.Error) as exc:
                raise ConfigurationError(f"{path} line {n}: {exc}") from None
        if not keys:
            raise ConfigurationError(f"the at-rest key file {path} has no key")
        return cls(keys, next(iter(keys)))

    @staticmethod
    def new_line(key_id: str) -> str:
        """A key file line with a new random key (``chronik`` never writes key files itself)."""
        return f"{key_id} {base64.b64encode(os.urandom(32)).decode()}"

    def __repr__(self) -> str:
        return f"<AtRestKeys current={self.current} ids={sorted(self.keys)}>"


class AtRest:
    """How whole payloads are stored: compressed (``zlib``) and/or encrypted (``keys``)."""

    def __init__(self, compress: str = "none", keys: AtRestKeys | None = None) -> None:
        if compress not in COMPRESSIONS:
            raise ConfigurationError(
                f"codec.compress must be one of {sorted(COMPRESSIONS)}, not {compress!r}"
            )
        if compress == "none" and keys is None:
            raise ConfigurationError("codec: give compress, encrypt or both")
        self.compress = compress
        self.keys = keys

    def seal(self, type_name: str, plain: bytes) -> bytes:
        """The stored form of a payload of ``type_name``."""
        body = zlib.compress(plain, 6) if self.compress == "zlib" else plain
        key_id = b"" if self.keys is None else self.keys.current.encode()
        header = bytes((_VERSION, COMPRESSIONS[self.compress], len(key_id))) + key_id
        if self.keys is None:
            return header + body
        nonce = os.urandom(_NONCE)
        aad = header + type_name.encode()
        sealed: bytes = self.keys.cipher(self.keys.current).encrypt(nonce, body, aad)
        return header + nonce + sealed

    def open(self, type_name: str, stored: bytes) -> bytes:
        """The JSON payload of a sealed row; DeserializationError if the header is unknown,
        the key it names is missing, or the bytes were altered."""
        return open_sealed(type_name, stored, self.keys)

    def __repr__(self) -> str:
        return f"<AtRest compress={self.compress} keys={self.keys!r}>"


class EncryptConfig(msgspec.Struct, forbid_unknown_fields=True):
    """``codec.encrypt``: the key file (the first key seals, every key opens)."""

    key_file: str


class AtRestConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The ``codec:`` section of chronik.yaml: ``{compress: zlib, encrypt: {key_file: ...}}``."""

    compress: str = "none"
    encrypt: EncryptConfig | None = None

    def build(self) -> AtRest:
        """The AtRest it describes (the key file read now); ConfigurationError if invalid."""
        keys = None if self.encrypt is None else AtRestKeys.from_file(self.encrypt.key_file)
        return AtRest(self.compress, keys)


def open_sealed(type_name: str, stored: bytes, keys: AtRestKeys | None) -> bytes:
    """``AtRest.open`` with only the keys (a store read with no compression configured still
    opens what was sealed with it)."""
    if len(stored) < 3 or stored[0] != _VERSION or stored[1] not in COMPRESSIONS.values():
        raise DeserializationError(f"a sealed {type_name} payload has an unknown header")
    n = stored[2]
    key_id, rest = stored[3 : 3 + n].decode("ascii", "replace"), stored[3 + n :]
    if n:
        if keys is None or key_id not in keys.keys:
            raise DeserializationError(
                f"a {type_name} payload was sealed with the at-rest key {key_id!r}, which is "
                "not in the key file"
            )
        from cryptography.exceptions import InvalidTag

        try:
            rest = keys.cipher(key_id).decrypt(
                rest[:_NONCE], rest[_NONCE:], stored[: 3 + n] + type_name.encode()
            )
        except (InvalidTag, ValueError) as exc:
            raise DeserializationError(
                f"a sealed {type_name} payload does not open with key {key_id!r}"
            ) from exc
    if stored[1] == COMPRESSIONS["zlib"]:
        try:
            return zlib.decompress(rest)
        except zlib.error as exc:
            raise DeserializationError(f"a sealed {type_name} payload: {exc}") from exc
    return rest
