"""Which fields of an event class are personal, and sealing / opening them in a payload dict.

``personal={"email": "customer_id"}`` marks ``email`` personal with ``customer_id`` as the
field naming its subject. Registration checks that both fields exist, that a subject field is
not itself personal and accepts a string, and that each personal field has a placeholder its
type accepts: ``None`` when the field is optional, else the string ``"[forgotten]"`` (a field
that accepts neither, say an ``int``, cannot be personal: make it ``int | None``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import msgspec

from chronik.errors import ConfigurationError, ValidationError
from chronik.personal.base import check_subject
from chronik.personal.envelope import FORGOTTEN, is_envelope, open_value, seal_value
from chronik.personal.keyring import KeyRing

__all__ = ["PersonalSpec", "envelope_subjects", "open_payload", "personal_spec", "seal_payload"]


class PersonalSpec(msgspec.Struct, frozen=True):
    """The personal fields of one class, by encoded name: field -> subject field, placeholder."""

    subjects: dict[str, str]
    placeholders: dict[str, Any]

    def subjects_of(self, payload: Mapping[str, Any]) -> list[str]:
        """The subjects a payload (builtins, before sealing) names."""
        return [
            check_subject(payload.get(s), s)
            for f, s in self.subjects.items()
            if payload.get(f) is not None
        ]


def _field_types(cls: type[Any]) -> dict[str, tuple[str, Any]]:
    """Attribute name -> (encoded name, type) of a msgspec Struct or dataclass."""
    if issubclass(cls, msgspec.Struct):
        return {f.name: (f.encode_name, f.type) for f in msgspec.structs.fields(cls)}
    hints = typing.get_type_hints(cls)
    return {f.name: (f.name, hints.get(f.name, Any)) for f in dataclasses.fields(cls)}


def _accepts(value: object, tp: Any) -> bool:
    try:
        msgspec.convert(value, tp)
    except (msgspec.ValidationError, TypeError):
        return False
    return True


def personal_spec(cls: type[Any], personal: Mapping[str, str], name: str) -> PersonalSpec:
    """Check ``personal`` (field -> subject field) against ``cls``; ConfigurationError naming
    the field that does not fit."""
    if not isinstance(personal, Mapping) or not personal:
        raise ConfigurationError(f"personal of {name} must map personal fields to subject fields")
    types = _field_types(cls)
    subjects: dict[str, str] = {}
    placeholders: dict[str, Any] = {}
    for field, subject in personal.items():
        for role, attr in (("personal field", field), ("subject field", subject)):
            if attr not in types:
                raise ConfigurationError(f"{name} has no {role} {attr!r} (personal={personal})")
        if subject in personal:
            raise ConfigurationError(
                f"{name}: the subject field {subject!r} cannot itself be personal"
            )
        if not _accepts("subject", types[subject][1]):
            raise ConfigurationError(f"{name}: the subject field {subject!r} must be a str")
        tp = types[field][1]
        placeholder = None if _accepts(None, tp) else FORGOTTEN
        if placeholder is not None and not _accepts(placeholder, tp):
            raise ConfigurationError(
                f"{name}: the personal field {field!r} must accept None or a str "
                f"(its placeholder once the subject is forgotten)"
            )
        subjects[types[field][0]] = types[subject][0]
        placeholders[types[field][0]] = placeholder
    return PersonalSpec(subjects, placeholders)


def seal_payload(
    spec: PersonalSpec, type_name: str, payload: dict[str, Any], keys: KeyRing
) -> dict[str, Any]:
    """``payload`` with each personal value (not None) replaced by its envelope. KeyNotLoaded
    for a subject not in the ring; ValidationError for a subject that was forgotten."""
    out = dict(payload)
    for field, subject_field in spec.subjects.items():
        value = payload.get(field)
        if value is None or is_envelope(value):
            continue
        subject = check_subject(payload.get(subject_field), subject_field)
        key = keys.cached(subject)
        if key is None:
            raise ValidationError(
                f"subject {subject!r} was forgotten: no personal data of it is stored again",
                field=field,
            )
        out[field] = seal_value(key, subject, type_name, field, value)
    return out


def envelope_subjects(payload: Mapping[str, Any]) -> list[str]:
    """The subjects of the envelopes at the top level of a stored payload."""
    return list(dict.fromkeys(v["s"] for v in payload.values() if is_envelope(v)))


def open_payload(
    type_name: str, payload: dict[str, Any], keys: KeyRing, placeholders: Mapping[str, Any]
) -> dict[str, Any]:
    """``payload`` with each top-level envelope opened, or replaced by the field's placeholder
    when its subject was forgotten. KeyNotLoaded for a subject not in the ring."""
    out = payload
    for field, value in payload.items():
        if is_envelope(value):
            if out is payload:
                out = dict(payload)
            key = keys.cached(value["s"])
            out[field] = (
                placeholders.get(field, FORGOTTEN)
                if key is None
                else open_value(key, type_name, field, value)
            )
    return out
