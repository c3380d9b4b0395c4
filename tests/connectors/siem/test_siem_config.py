"""The ``siem:`` and ``alerts:`` sections as gateway.yaml gives them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mcp_gateway.config import Settings
from mcp_gateway.connectors.siem.config import HttpSink, SyslogSink


def test_both_sink_types_parse_from_the_settings_aggregate() -> None:
    settings = Settings.model_validate(
        {
            "siem": {
                "sinks": {
                    "soc": {"type": "syslog", "host": "siem.internal", "tls": {"ca_file": "/etc/ca.pem"}},
                    "splunk": {"type": "http", "url": "https://splunk:8088/services/collector/event",
                               "token": "secret://hec"},
                }
            },
            "alerts": {"rules": {"denial_burst": {"count": 5, "window_seconds": 60}}},
        }
    )  # fmt: skip
    soc, splunk = settings.siem.sinks["soc"], settings.siem.sinks["splunk"]
    assert isinstance(soc, SyslogSink) and soc.port == 6514 and soc.format == "ocsf"
    assert isinstance(splunk, HttpSink) and not splunk.allow_private_network
    assert settings.alerts.enabled and settings.siem.start_at == "beginning"


def test_a_collector_token_pasted_in_plain_is_refused_without_repeating_it() -> None:
    token = "8f2c1e7a-0d4b-4a8e-9b1c-5e6f7a8b9c0d"
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate(
            {"siem": {"sinks": {"s": {"type": "http", "url": "https://c/e", "token": token}}}}
        )
    assert "secret://NAME" in str(caught.value) and token not in str(caught.value)


def test_a_sink_name_that_is_not_a_plain_word_is_refused() -> None:
    with pytest.raises(ValidationError, match="must match"):
        Settings.model_validate({"siem": {"sinks": {"a b": {"type": "syslog", "host": "h"}}}})
