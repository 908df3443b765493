"""Choosing an adapter by the scheme of a URL: shared by ``open_store`` and ``open_transport``.

``safe_url`` shows such a URL without its password, in every adapter's repr and errors.

Adapters are imported by path, and only when their URL is used, so a backend whose extra is not
installed costs nothing until it is asked for, and then fails with the extra's name.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any, TypeAlias

from chronik.errors import ConfigurationError, MissingExtraError

__all__ = ["Adapters", "load_adapter", "safe_url"]

# scheme -> (module, class, extra that provides its driver, driver module)
Adapters: TypeAlias = Mapping[str, tuple[str, str, str | None, str | None]]


def load_adapter(url: str, adapters: Adapters, what: str) -> tuple[str, ModuleType, Any]:
    """The URL's scheme, the adapter's module and its class; ConfigurationError or
    MissingExtraError when it cannot be had."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"invalid {what} URL {url!r}: expected one of "
            + ", ".join(f"{s}://..." for s in sorted(adapters))
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in adapters:
        raise ConfigurationError(
            f"unknown {what} scheme {scheme!r} in {url!r}: expected one of "
            + ", ".join(sorted(adapters))
        )
    module_name, class_name, extra, driver = adapters[scheme]
    if driver is not None:
        try:
            importlib.import_module(driver)
        except ImportError:
            raise MissingExtraError(extra or scheme, driver) from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ConfigurationError(f"the {scheme} {what} is not available in this version") from None
    return scheme, module, getattr(module, class_name)


def safe_url(url: str) -> str:
    """``url`` fit for a message or a repr: the password of its user info becomes ``***``."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"
