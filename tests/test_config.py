"""gateway.yaml: defaults, relative paths, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_gateway.config import load_settings
from mcp_gateway.errors import ConfigError
from mcp_gateway.types import secret_refs


def test_defaults_bind_to_loopback_and_use_sqlite() -> None:
    settings = load_settings(None)
    assert settings.server.host == "127.0.0.1"
    assert settings.audit.backend == "sqlite"
    assert settings.resource_url == "http://127.0.0.1:8080"


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("data_dir: d\npolicies: p\n")
    settings = load_settings(path)
    assert settings.data_dir == tmp_path / "d"
    assert settings.policies == tmp_path / "p"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server: [1\n", "gateway.yaml:2: invalid yaml"),
        ("bogus: 1\n", "bogus"),
        ("upstreams:\n  BAD NAME:\n    transport: stdio\n    command: x\n", "BAD NAME"),
        ("upstreams:\n  u:\n    transport: http\n    url: ftp://x\n", "url must start with http"),
        ("- a list\n", "top level must be a mapping"),
        ("server:\n  trusted_proxies: [proxy.local]\n", "`proxy.local` is not an IP address or network"),
        (
            "upstreams:\n  a:\n    transport: stdio\n    command: x\n    prefix: ''\n"
            "  b:\n    transport: stdio\n    command: y\n    prefix: ''\n",
            "gateway.yaml:9: upstreams `a` and `b` both offer their tools under prefix ``",
        ),
        (
            "upstreams:\n  a:\n    transport: stdio\n    command: x\n"
            "  b:\n    transport: stdio\n    command: y\n    prefix: a.\n",
            "gateway.yaml:8: upstreams `a` and `b` both offer their tools under prefix `a.`",
        ),
        ("upstreams:\n  a:\n    transport: stdio\n    command: x\n    prefix: 'a b'\n", "prefix"),
    ],
)
def test_an_invalid_config_is_a_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert expected in str(info.value)


def test_secret_references_are_found_inside_header_values() -> None:
    assert secret_refs("Bearer secret://api-token and secret://other.one") == ["api-token", "other.one"]


ROOT = Path(__file__).parent.parent


def test_the_shipped_example_config_is_valid() -> None:
    settings = load_settings(ROOT / "gateway.example.yaml")
    assert "time" in settings.upstreams


def test_the_shipped_example_policies_are_valid() -> None:
    from mcp_gateway.policy.evaluate import evaluate
    from mcp_gateway.policy.load import load_policy

    policy = load_policy(ROOT / "policies")
    assert evaluate(policy, "pipeline-fixer", "time.get_current_time", {"timezone": "UTC"}).allowed
    assert not evaluate(policy, "pipeline-fixer", "time.get_current_time", {"timezone": "Asia/Tokyo"}).allowed
    assert not evaluate(policy, "reporting-bot", "everything.echo", {"message": "x"}).allowed


def test_a_secret_pasted_into_a_tagged_key_is_not_repeated_by_the_error(tmp_path: Path) -> None:
    # pydantic quotes a discriminator's value in its message even with inputs hidden.
    path = tmp_path / "gateway.yaml"
    path.write_text("upstreams:\n  x:\n    transport: sk-live-0123456789abcdef\n    command: echo\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "sk-live-0123456789abcdef" not in str(caught.value)
    assert "upstreams.x: must be one of 'stdio', 'http'" in str(caught.value)
