"""The ``kafka://`` URL's options are parsed and checked before anything connects."""

from __future__ import annotations

import pytest

from chronik.errors import ConfigurationError
from chronik.transports.kafka import KafkaTransport


def test_defaults_and_options_from_the_query_string() -> None:
    """Unset options keep their defaults; set ones are read from the query string."""
    plain = KafkaTransport("kafka://127.0.0.1:9092")
    assert (plain.session_timeout, plain.timeout, plain.drain_timeout) == (6.0, 10.0, 30.0)
    tuned = KafkaTransport("kafka://127.0.0.1:9092?session_timeout=2&drain_timeout=5")
    assert (tuned.session_timeout, tuned.drain_timeout) == (2.0, 5.0)


@pytest.mark.parametrize("value", ["0.5", "1801", "soon"])
def test_a_session_timeout_out_of_range_is_refused_by_name(value: str) -> None:
    """A session timeout below 1 s, above 30 min or not a number names the option."""
    with pytest.raises(ConfigurationError, match="session_timeout"):
        KafkaTransport(f"kafka://127.0.0.1:9092?session_timeout={value}")


def test_an_unknown_option_is_refused() -> None:
    """A misspelt option is an error, not silently ignored."""
    with pytest.raises(ConfigurationError, match="session_timout"):
        KafkaTransport("kafka://127.0.0.1:9092?session_timout=2")
