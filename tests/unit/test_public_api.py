"""The public surface: names, import cost, error tree, store URLs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import chronik
import chronik.errors


def test_all_is_sorted_and_complete() -> None:
    """chronik.__all__ is sorted, unique, and every name in it exists."""
    names = chronik.__all__
    assert names == sorted(names) and len(set(names)) == len(names)
    for name in names:
        assert hasattr(chronik, name), name


def test_every_error_is_importable_from_both_modules() -> None:
    """Each error class in chronik.errors is exported by chronik, and all derive ChronikError."""
    for name in chronik.errors.__all__:
        cls = getattr(chronik.errors, name)
        assert getattr(chronik, name) is cls
        assert issubclass(cls, chronik.ChronikError)
    assert issubclass(chronik.WrongExpectedVersion, chronik.ConcurrencyError)
    assert issubclass(chronik.PayloadTooLarge, chronik.ValidationError)


def test_wrong_expected_version_carries_expected_and_actual() -> None:
    """WrongExpectedVersion exposes stream, expected and actual and names them in its message."""
    s = chronik.StreamId("account", "a1")
    err = chronik.WrongExpectedVersion(s, 3, 5)
    assert (err.stream, err.expected, err.actual) == (s, 3, 5)
    assert "account/a1" in str(err) and "3" in str(err) and "5" in str(err)
    assert "no stream" in str(chronik.WrongExpectedVersion(s, chronik.STREAM_EXISTS, None))


def test_import_needs_only_msgspec() -> None:
    """`import chronik` loads no optional dependency (typer, rich, asyncpg, grpc, starlette...)."""
    code = (
        "import sys, chronik\n"
        "bad = [m for m in ('typer','rich','asyncpg','grpc','starlette','nats','aio_pika','yaml')"
        " if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    "url",
    [
        "",
        "events.db",
        "mysql://x",
        "sqlite://",
        "sqlite://:memory:",
        "sqlite:///x.db?bogus=1",
        "sqlite:///x.db?synchronous=sometimes",
        "sqlite:///x.db?busy_timeout_ms=soon",
    ],
)
def test_bad_store_urls_are_configuration_errors(url: str) -> None:
    """A malformed or unknown store URL raises ConfigurationError naming the problem."""
    with pytest.raises(chronik.ConfigurationError):
        chronik.open_store(url)


def test_store_url_options_reach_the_adapter(tmp_path: object) -> None:
    """Query options (synchronous=full, limits) configure the SQLite store."""
    store = chronik.open_store(f"sqlite:///{tmp_path}/e.db?synchronous=full&max_payload_bytes=10")
    assert store.synchronous == "full"  # type: ignore[attr-defined]
    assert store.max_payload_bytes == 10
    assert "open" not in repr(store) and "new" in repr(store)


def test_missing_extra_error_names_the_extra() -> None:
    """MissingExtraError tells the user which extra to install."""
    err = chronik.MissingExtraError("postgres", "asyncpg")
    assert "pip install 'chronik[postgres]'" in str(err)
