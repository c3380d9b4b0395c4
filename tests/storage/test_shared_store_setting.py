"""The top-level ``store:`` setting: which stores it moves to PostgreSQL, and what overrides it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_gateway.app.databases import postgres_components
from mcp_gateway.config import PostgresStore, Settings, SQLiteStore, load_settings
from mcp_gateway.errors import ConfigError

URL = "postgresql://postgres@127.0.0.1:5432/test"
ALL = [
    "audit",
    "vault",
    "approvals",
    "agent_tokens",
    "admin_tokens",
    "pins",
    "rerun_keys",
    "request_states",
    "incidents",
    "siem_cursor",
]


def test_a_dsn_string_puts_every_store_on_postgres_in_the_default_schema(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"store: {URL}\n")
    settings = load_settings(config)
    components = postgres_components(settings)
    assert [c.name for c in components] == ALL
    assert {(c.dsn, c.schema) for c in components} == {(URL, "mcp_gateway")}


def test_a_mapping_names_the_schema_and_option_only_sections_still_follow_it() -> None:
    settings = Settings.model_validate(
        {
            "store": {"url": URL, "schema": "gw"},
            "audit": {"checkpoint_every": 5},
            "pinning": {"new_tools": "auto"},
            "vault": {"key_file": None},
            "approvals": {"ttl_seconds": 60},
        }
    )
    assert settings.audit.checkpoint_every == 5 and settings.pinning.new_tools == "auto"
    assert settings.approvals.ttl_seconds == 60 and settings.vault.key_file is None
    assert [c.name for c in postgres_components(settings)] == ALL
    assert {c.schema for c in postgres_components(settings)} == {"gw"}


def test_a_section_naming_its_own_backend_overrides_the_shared_store() -> None:
    settings = Settings.model_validate(
        {
            "store": URL,
            "agents": {"backend": "sqlite", "path": "agents.db"},
            "approvals": {"store": "sqlite"},
            "pinning": {"path": "pins.db"},
            "audit": {"schema": "audit_only"},
        }
    )
    assert isinstance(settings.agents, SQLiteStore)
    assert settings.approvals.store == "sqlite" and settings.pinning.backend == "sqlite"
    assert isinstance(settings.audit, PostgresStore) and settings.audit.schema_name == "audit_only"
    assert [c.name for c in postgres_components(settings)] == [
        "audit",
        "vault",
        "admin_tokens",
        "rerun_keys",
        "request_states",
        "incidents",
        "siem_cursor",
    ]


def test_without_a_store_setting_everything_stays_on_sqlite_files() -> None:
    settings = Settings()
    assert settings.store is None and postgres_components(settings) == []
    assert isinstance(settings.admins, SQLiteStore) and settings.admins.path == Path("admins.db")


@pytest.mark.parametrize("value", ["mysql://db/x", "", "{url: ''}"])
def test_a_store_that_is_not_postgres_is_a_config_error_that_does_not_echo_it(
    tmp_path: Path, value: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"store: {value or '{url: null}'}\n")
    with pytest.raises(ConfigError, match="store") as info:
        load_settings(config)
    assert "mysql://db/x" not in str(info.value)
