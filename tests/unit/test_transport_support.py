"""Small shared pieces of the transports and the test services: URL masking, names."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import chronik
from chronik.adapters import safe_url
from chronik.testing import service_base, services
from chronik.transports import open_transport


def test_safe_url_masks_the_password_and_nothing_else() -> None:
    """A password becomes ***, a URL without one comes back as it was."""
    assert safe_url("amqp://g:secret@h:5672/vh") == "amqp://g:***@h:5672/vh"
    assert safe_url("postgresql://u:pw@h/db?schema=s") == "postgresql://u:***@h/db?schema=s"
    for plain in ("postgresql://u@h/db", "nats://127.0.0.1:4222", "memory://", "no-scheme"):
        assert safe_url(plain) == plain


def test_safe_url_never_shows_a_password_holding_at_or_slash() -> None:
    """Passwords with '@', '/' or ':' in them are masked whole, in a transport's repr too."""
    for password in ("p@ss", "a/b", "x:y@z/w"):
        url = f"amqp://guest:{password}@host:5672/"
        assert password not in safe_url(url) and "guest:***@" in safe_url(url)
        assert password not in repr(open_transport(url))


def test_the_test_services_error_does_not_shadow_the_chronik_error(tmp_path: Path) -> None:
    """A service that cannot start raises ServiceNotStarted, not chronik.ServiceUnavailable."""
    assert services.ServiceNotStarted is service_base.ServiceNotStarted
    assert not issubclass(services.ServiceNotStarted, chronik.ServiceUnavailable)
    nats = services.NatsService()
    nats.workdir = tmp_path
    with pytest.raises(services.ServiceNotStarted, match="cannot run"):
        nats._spawn([str(tmp_path / "no-such-server")])


def test_the_old_name_still_imports_with_a_deprecation_warning() -> None:
    """chronik.testing.services.ServiceUnavailable is the new class, and says it is deprecated."""
    with pytest.warns(DeprecationWarning, match="ServiceNotStarted"):
        from chronik.testing.services import ServiceUnavailable
    assert ServiceUnavailable is services.ServiceNotStarted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from chronik.testing.services import NatsService, PostgresService, RabbitMQService
    assert {NatsService.name, PostgresService.name, RabbitMQService.name} == {
        "nats",
        "postgresql",
        "rabbitmq",
    }
    with pytest.raises(AttributeError):
        services.NoSuchService  # noqa: B018
