"""The gateway end to end: uvicorn on 127.0.0.1, the official SDK client, real upstream processes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from conftest import ERA_VERSION, ERAS, GatewayFactory, connect, leaky_stdio, wait_until
from mcp_gateway.errors import AuditWriteError
from mcp_gateway.types import AuditCheckpoint, AuditEvent, AuditRecord

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: a-echo
        tool: leaky.echo
        args:
          text: {max_length: 40, not_in: [forbidden]}
        deny:
          - id: a-no-drop
            args: {text: {pattern: "(?i).*drop table.*"}}
      - id: a-leaks
        tool: "leaky.leak_*"
      - id: a-show
        tool: leaky.show_header
  agent-b:
    grants:
      - id: b-echo
        tool: leaky.echo
"""


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("mode", ERAS)
async def test_a_granted_tool_works_in_both_protocol_eras(make_gateway: GatewayFactory, mode: str) -> None:
    gw = make_gateway(POLICY)
    async with connect(gw.url, gw.tokens["agent-a"], mode) as client:
        assert client.protocol_version == ERA_VERSION[mode]
        result = await client.call_tool("leaky.echo", {"text": "hello"})
    assert not result.is_error
    assert _text(result) == "hello"
    assert _calls(gw.call_log) == ["echo"]


@pytest.mark.parametrize("mode", ERAS)
async def test_tools_list_shows_exactly_the_granted_tools(make_gateway: GatewayFactory, mode: str) -> None:
    gw = make_gateway(POLICY, agents=("agent-a", "agent-b"))
    async with connect(gw.url, gw.tokens["agent-b"], mode) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
    assert names == ["leaky.echo"]
    async with connect(gw.url, gw.tokens["agent-a"], mode) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
    assert names == [
        "leaky.echo",
        "leaky.leak_env",
        "leaky.leak_header",
        "leaky.leak_in_error",
        "leaky.show_header",
    ]


@pytest.mark.parametrize("mode", ERAS)
async def test_an_ungranted_tool_is_a_protocol_error_that_names_no_other_tool(
    make_gateway: GatewayFactory, mode: str
) -> None:
    gw = make_gateway(POLICY, agents=("agent-a", "agent-b"))
    async with connect(gw.url, gw.tokens["agent-b"], mode) as client:
        for tool in ("leaky.leak_env", "leaky.no_such_tool", "other.thing"):
            with pytest.raises(MCPError) as info:
                await client.call_tool(tool, {"var": "HOME"})
            assert info.value.code == -32602
            assert tool in info.value.message
            assert "echo" not in info.value.message and "leak_header" not in info.value.message
    assert _calls(gw.call_log) == []
    denied = [r for r in gw.audit() if r.kind == "denied"]
    assert [r.tool for r in denied] == ["leaky.leak_env", "leaky.no_such_tool", "other.thing"]
    assert all(r.agent == "agent-b" and r.status == "not_granted" for r in denied)


CONSTRAINT_POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: g
        tool: leaky.echo
        args:
          text: {in: [ok, fine, "{long}"], pattern: "^[a-z]+$"}
          tag: {not_in: [prod]}
          n: {min: 1, max: 100}
          note: {max_length: 5}
          fields: {subset_of: [Name, Amount]}
          must: {required: true}
        deny:
          - id: no-bad
            args: {tag: {in: [bad]}}
"""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"text": "nope"}, "`text`"),
        ({"text": "OK"}, "`text`"),
        ({"tag": "prod"}, "`tag`"),
        ({"n": 0}, "`n`"),
        ({"n": 101}, "`n`"),
        ({"n": "5"}, "`n`"),
        ({"note": "toolong"}, "`note`"),
        ({"fields": ["Name", "Password"]}, "`fields`"),
        ({"must": None, "drop_must": True}, "`must`"),
        ({"tag": "bad"}, "no-bad"),
    ],
)
@pytest.mark.parametrize("mode", ERAS)
async def test_every_constraint_kind_refuses_a_violating_call(
    make_gateway: GatewayFactory, mode: str, args: dict[str, Any], expected: str
) -> None:
    gw = make_gateway(CONSTRAINT_POLICY)
    call = {"text": "ok", "must": 1, **args}
    if call.pop("drop_must", False):
        call.pop("must")
    async with connect(gw.url, gw.tokens["agent-a"], mode) as client:
        result = await client.call_tool("leaky.echo", call)
    assert result.is_error
    assert "denied by policy" in _text(result)
    assert expected in _text(result)
    assert _calls(gw.call_log) == []
    (denied,) = [r for r in gw.audit() if r.kind == "denied"]
    assert denied.status == "denied" and denied.tool == "leaky.echo"


async def test_a_deny_rule_beats_the_grant_that_allows(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(POLICY)
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        result = await client.call_tool("leaky.echo", {"text": "please DROP TABLE x"})
    assert result.is_error and "a-no-drop" in json.dumps(gw.audit()[-1].detail)
    assert _calls(gw.call_log) == []


async def test_an_allowed_call_has_a_durable_intent_and_outcome_in_the_audit(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY)
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        await client.call_tool("leaky.echo", {"text": "audited"})
    records = [r for r in gw.audit() if r.kind in ("intent", "outcome")]
    intent, outcome = records
    assert intent.call_id == outcome.call_id and intent.seq < outcome.seq
    assert intent.agent == "agent-a" and intent.tool == "leaky.echo" and intent.args == {"text": "audited"}
    assert intent.detail["rule_ids"] == ["a-echo"]
    assert outcome.status == "ok" and outcome.detail["result_digest"] and outcome.detail["latency_ms"] >= 0


@pytest.mark.parametrize("mode", ERAS)
async def test_a_secret_injected_into_a_stdio_upstream_never_reaches_the_agent(
    make_gateway: GatewayFactory, tmp_path: Path, mode: str
) -> None:
    secret = "sk-live-9f8e7d6c5b4a39281706"
    log = tmp_path / "calls.log"
    gw = make_gateway(
        POLICY,
        secrets={"upstream-key": secret},
        upstreams={"leaky": leaky_stdio(log, {"UPSTREAM_KEY": "secret://upstream-key"})},
    )
    async with connect(gw.url, gw.tokens["agent-a"], mode) as client:
        leaked = await client.call_tool("leaky.leak_env", {"var": "UPSTREAM_KEY"})
        failed = await client.call_tool("leaky.leak_in_error", {"var": "UPSTREAM_KEY"})
    text = _text(leaked)
    # The upstream did receive the secret: it echoed it in nine encodings, each one scrubbed.
    assert text.count("[REDACTED:upstream-key]") == 8
    _assert_absent(secret, [text, _text(failed)])
    assert failed.is_error and "[REDACTED:upstream-key]" in _text(failed)
    outcome = next(r for r in gw.audit() if r.kind == "outcome")
    assert outcome.detail["redacted"] is True and outcome.detail["redactions"] >= 8
    _assert_absent(secret, [json.dumps(r.args) + json.dumps(r.detail) for r in gw.audit()])


@pytest.mark.parametrize("mode", ERAS)
async def test_an_http_header_secret_never_reaches_the_agent_and_the_agent_token_never_goes_upstream(
    make_gateway: GatewayFactory, http_upstream: tuple[str, Path], mode: str
) -> None:
    url, log = http_upstream
    secret = "ghp_0123456789abcdefABCDEF0123"
    gw = make_gateway(
        POLICY,
        secrets={"up-token": secret},
        upstreams={
            "leaky": {
                "transport": "http",
                "url": url,
                "headers": {"Authorization": "Bearer secret://up-token"},
                "allow_private_network": True,
            }
        },
    )
    token = gw.tokens["agent-a"]
    async with connect(gw.url, token, mode) as client:
        leaked = await client.call_tool("leaky.leak_header", {"name": "authorization"})
        seen = await client.call_tool("leaky.show_header", {"name": "authorization"})
    assert _text(leaked).count("[REDACTED:up-token]") >= 7
    assert _text(seen) == "Bearer [REDACTED:up-token]"
    _assert_absent(secret, [_text(leaked), _text(seen)])
    assert token not in _text(seen) and token[17:] not in _text(seen)
    assert _calls(log) == ["leak_header", "show_header"]


def _assert_absent(secret: str, texts: Sequence[str]) -> None:
    raw = secret.encode()
    forms = [secret, base64.b64encode(raw).decode(), raw.hex(), raw.hex().upper()]
    for text in texts:
        for form in forms:
            assert form not in text


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing bearer token"),
        ("Bearer mgw_aaaaaaaaaaaa_" + "A" * 43, "unknown token"),
        ("Bearer not-a-token", "malformed token"),
        ("Basic dXNlcjpwYXNz", "missing bearer token"),
    ],
)
def test_a_wrong_token_gets_401_with_resource_metadata_and_is_audited(
    make_gateway: GatewayFactory, header: str | None, reason: str
) -> None:
    gw = make_gateway(POLICY)
    response = _post(gw.url, header, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and f'resource_metadata="{gw.base}/.well-known/' in challenge
    metadata = httpx.get(f"{gw.base}/.well-known/oauth-protected-resource/mcp").json()
    assert metadata["resource"] == gw.url
    failure = gw.audit()[-1]
    assert failure.kind == "auth_failure" and failure.detail["reason"] == reason


def test_revoked_and_expired_tokens_get_401(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(POLICY, agents=("agent-a", "agent-b"))
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert _post(gw.url, f"Bearer {gw.tokens['agent-a']}", body, modern=True).status_code == 200
    assert gw.runtime.agents.revoke("agent-a") == 1
    assert _post(gw.url, f"Bearer {gw.tokens['agent-a']}", body, modern=True).status_code == 401
    assert gw.audit()[-1].detail["reason"] == "revoked token"
    _, short = gw.runtime.agents.create("agent-b", expires_at=__import__("time").time() + 0.5)
    wait_until(lambda: _post(gw.url, f"Bearer {short}", body, modern=True).status_code == 401, timeout=5)
    assert gw.audit()[-1].detail["reason"] == "expired token"


def test_a_session_opened_by_one_agent_cannot_be_used_with_another_agents_token(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY, agents=("agent-a", "agent-b"))
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    opened = _post(gw.url, f"Bearer {gw.tokens['agent-a']}", init)
    session = opened.headers["mcp-session-id"]
    hijack = _post(
        gw.url,
        f"Bearer {gw.tokens['agent-b']}",
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        session=session,
    )
    assert hijack.status_code == 404
    own = _post(
        gw.url,
        f"Bearer {gw.tokens['agent-a']}",
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        session=session,
    )
    assert own.status_code == 200


def test_a_bad_host_or_origin_is_refused(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(POLICY)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    auth = f"Bearer {gw.tokens['agent-a']}"
    assert _post(gw.url, auth, body, modern=True).status_code == 200
    assert _post(gw.url, auth, body, modern=True, extra={"Host": "evil.example:80"}).status_code == 421
    assert _post(gw.url, auth, body, modern=True, extra={"Origin": "http://evil.example"}).status_code == 403


def _post(
    url: str,
    authorization: str | None,
    body: dict[str, Any],
    *,
    session: str | None = None,
    modern: bool = False,
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    if session:
        headers["Mcp-Session-Id"] = session
        headers["MCP-Protocol-Version"] = "2025-11-25"
    if modern:
        # A 2026-07-28 request is self-contained: version and capabilities ride in params._meta.
        headers["MCP-Protocol-Version"] = "2026-07-28"
        headers["Mcp-Method"] = body["method"]
        meta = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"},
        }
        body = {**body, "params": {**body.get("params", {}), "_meta": meta}}
    headers.update(extra or {})
    return httpx.post(url, json=body, headers=headers, timeout=10)


class BrokenSink:
    """An audit store that cannot write (a full or read-only disk)."""

    def append(self, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        raise AuditWriteError("disk full")

    def records(self, *, after_seq: int = 0, limit: int | None = None) -> list[AuditRecord]:
        return []

    def query(self, **filters: object) -> list[AuditRecord]:
        return []

    def head(self) -> tuple[int, str] | None:
        return None

    def write_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        raise AuditWriteError("disk full")

    def checkpoints(self) -> list[AuditCheckpoint]:
        return []

    def close(self) -> None:
        pass


@pytest.mark.parametrize("mode", ERAS)
async def test_an_unwritable_audit_store_refuses_calls_and_the_upstream_sees_nothing(
    make_gateway: GatewayFactory, mode: str
) -> None:
    gw = make_gateway(POLICY, sink=BrokenSink())
    async with connect(gw.url, gw.tokens["agent-a"], mode) as client:
        result = await client.call_tool("leaky.echo", {"text": "hello"})
    assert result.is_error and "audit log unavailable" in _text(result)
    assert _calls(gw.call_log) == []


async def test_a_broken_policy_on_reload_keeps_the_last_good_policy(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(POLICY)
    policy_file = gw.settings.policies / "policy.yaml"
    policy_file.write_text("version: 1\nagents:\n  agent-a:\n    grants:\n      - tool: [unclosed\n")
    wait_until(
        lambda: any(r.kind == "policy_reload" and r.status == "error" for r in gw.audit()),
        what="failed reload",
    )
    reload_record = [r for r in gw.audit() if r.kind == "policy_reload"][-1]
    assert any("policy.yaml:" in p for p in reload_record.detail["problems"])
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        assert not (await client.call_tool("leaky.echo", {"text": "still"})).is_error
    # A good edit then takes effect: agent-a loses leaky.echo.
    policy_file.write_text(
        POLICY.replace("tool: leaky.echo\n        args", "tool: leaky.nothing\n        args")
    )
    wait_until(
        lambda: any(r.kind == "policy_reload" and r.status == "ok" for r in gw.audit()), what="good reload"
    )
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        with pytest.raises(MCPError):
            await client.call_tool("leaky.echo", {"text": "gone"})
    assert gw.readiness()["policy"] == "ok"


async def test_each_call_is_recorded_with_the_policy_version_that_decided_it_and_the_replica(
    make_gateway: GatewayFactory,
) -> None:
    gw = make_gateway(POLICY)
    holder = gw.runtime.gateway.policy
    first = holder.version
    replica = f"{socket.gethostname()}:{os.getpid()}"
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        assert not (await client.call_tool("leaky.echo", {"text": "before"})).is_error
    (intent,) = [r for r in gw.audit() if r.kind == "intent"]
    assert len(first) == 12 and intent.detail["policy"] == first and intent.detail["replica"] == replica
    # An edit that changes no decision still changes the version the next records name.
    (gw.settings.policies / "policy.yaml").write_text(POLICY + "# reviewed\n")
    wait_until(lambda: holder.version != first, what="the reload")
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        assert not (await client.call_tool("leaky.echo", {"text": "after"})).is_error
        assert (await client.call_tool("leaky.echo", {"text": "DROP TABLE users"})).is_error
    records = gw.audit()
    intent = [r for r in records if r.kind == "intent"][-1]
    (denied,) = [r for r in records if r.kind == "denied"]
    assert intent.detail["policy"] == denied.detail["policy"] == holder.version != first
    assert denied.detail["rule_ids"] == ["a-no-drop"] and denied.detail["replica"] == replica


async def test_a_sealed_vault_refuses_calls_that_need_secrets(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    log = tmp_path / "sealed-calls.log"
    gw = make_gateway(
        POLICY,
        sealed=True,
        upstreams={"leaky": leaky_stdio(log, {"UPSTREAM_KEY": "secret://upstream-key"})},
    )
    assert gw.readiness()["vault"] == "sealed"
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        result = await client.call_tool("leaky.echo", {"text": "hi"})
    assert result.is_error and "vault is sealed" in _text(result)
    assert _calls(log) == []
    assert gw.audit()[-1].status == "vault_sealed"


async def test_the_running_gateway_keeps_serving_through_master_key_rotation_and_secret_replacement(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from mcp_gateway.cli import app

    first, second = "first-secret-value-0001", "second-secret-value-0002"
    log = tmp_path / "rotation-calls.log"
    gw = make_gateway(
        POLICY,
        secrets={"upstream-key": first},
        upstreams={"leaky": leaky_stdio(log, {"UPSTREAM_KEY": "secret://upstream-key"})},
    )
    cli = CliRunner()
    config = str(gw.config_path)
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        assert "[REDACTED:upstream-key]" in _text(
            await client.call_tool("leaky.leak_env", {"var": "UPSTREAM_KEY"})
        )
        rotated = cli.invoke(app, ["vault", "rotate-master", "-c", config])
        assert rotated.exit_code == 0, rotated.output
        after_rotation = _text(await client.call_tool("leaky.leak_env", {"var": "UPSTREAM_KEY"}))
        assert "[REDACTED:upstream-key]" in after_rotation and first not in after_rotation
        assert cli.invoke(app, ["vault", "put", "upstream-key", "-c", config], input=second).exit_code == 0
        # The upstream reconnects with the new value; until it has, it may still echo the old one, which
        # the redactor keeps knowing. Poll (bounded) until the upstream holds the new value.
        texts: list[str] = []
        want = hashlib.sha256(second.encode()).hexdigest()
        with anyio.fail_after(30):
            while want not in (texts[-1] if texts else ""):
                texts.append(_text(await client.call_tool("leaky.leak_env", {"var": "UPSTREAM_KEY"})))
    _assert_absent(first, texts)
    _assert_absent(second, texts)
    assert "[REDACTED:upstream-key]" in texts[-1]


async def test_calls_keep_succeeding_while_the_master_key_rotates_underneath_them(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    import sys

    log = tmp_path / "rotation-load.log"
    secrets = {f"s{i}": f"rotating-secret-value-{i:04d}" for i in range(20)}
    gw = make_gateway(
        POLICY, secrets=secrets, upstreams={"leaky": leaky_stdio(log, {"UPSTREAM_KEY": "secret://s0"})}
    )
    exe = str(Path(sys.executable).parent / "mcp-gateway")
    results: list[Any] = []
    rotating = True

    async def caller() -> None:
        async with connect(gw.url, gw.tokens["agent-a"]) as client:
            while rotating or len(results) < 3:
                results.append(await client.call_tool("leaky.leak_env", {"var": "UPSTREAM_KEY"}))

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            for _ in range(3):
                # A real CLI process rotates while the gateway serves calls.
                done = await anyio.run_process([exe, "vault", "rotate-master", "-c", str(gw.config_path)])
                count = int(done.stdout.split(b"re-wrapped ", 1)[1].split()[0])
                assert count >= 20  # the 20 secrets here, plus the gateway's own audit keys
            rotating = False
    assert results and all(not r.is_error for r in results)
    assert all("[REDACTED:s0]" in _text(r) for r in results)
    _assert_absent(secrets["s0"], [_text(r) for r in results])
