"""The official TypeScript SDK client (``@modelcontextprotocol/sdk``, 2025-11-25) through the gateway
fronting server-everything (npm) over stdio: logging, resource subscriptions, sampling, elicitation.

One run of ``tests/fixtures/ts_client.mjs`` drives every step and prints a JSON report; each test
checks one behaviour in that report and in the gateway's audit log.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conformance_harness import NodeTools, node_tools

from conftest import FIXTURES, gateways

__all__ = ["node_tools"]  # the session fixture, re-exported for pytest

SCRIPT = FIXTURES / "ts_client.mjs"
RUN_TIMEOUT = 120  # seconds; the script waits at most 15 s for any one notification
GRANT_ALL = """
version: 1
agents:
  agent-a:
    grants:
      - id: everything
        tool: "*"
"""
RESOURCES = ["demo://resource/static/document/features.md", "demo://resource/static/document/startup.md"]
LEVELS = {"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}


@dataclass(frozen=True)
class Run:
    report: dict[str, Any]
    audit: list[Any]

    def exchange(self, tool: str, method: str | None = None) -> list[tuple[str, str]]:
        """(kind, status) of the audit records of ``tool``, in order; with ``method``, only the calls
        whose intent names that method (an outcome carries its intent's ``call_id``, not the method)."""
        records = [r for r in self.audit if r.tool == tool]
        if method is not None:
            calls = {r.call_id for r in records if r.kind == "intent" and r.detail.get("method") == method}
            records = [r for r in records if r.call_id in calls]
        return [(r.kind, r.status) for r in records]

    def position(self, kind: str, tool: str) -> int:
        return next(i for i, r in enumerate(self.audit) if (r.kind, r.tool) == (kind, tool))


@pytest.fixture(scope="module")
def ts_run(node_tools: NodeTools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The gateway fronting server-everything, driven once by the TypeScript client script."""
    upstream = {
        "transport": "stdio",
        "command": str(node_tools.everything),
        "args": ["stdio"],
        "env": {"PATH": node_tools.env["PATH"]},
        "relay_requests": ["sampling", "elicitation"],
        # server-everything asks mid-call, which the gateway relays to 2025-11-25 sessions.
        "protocol": "legacy",
    }
    node = shutil.which("node", path=node_tools.env["PATH"])
    assert node is not None
    with gateways(tmp_path_factory.mktemp("ts-client")) as make_gateway:
        gw = make_gateway(GRANT_ALL, upstreams={"everything": upstream}, watch_policy=False)
        env = {
            **node_tools.env,
            "MCP_GATEWAY_TOKEN": gw.tokens["agent-a"],
            "MCP_TS_SDK": str(node_tools.ts_sdk),
        }
        done = subprocess.run(
            [node, str(SCRIPT), gw.url], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        assert done.returncode == 0, done.stderr
        yield Run(json.loads(done.stdout), gw.audit())


@pytest.mark.e2e
def test_the_ts_client_speaks_2025_11_25_with_the_gateway_and_sees_the_upstream_namespaced(
    ts_run: Run,
) -> None:
    report = ts_run.report
    assert report["protocol_version"] == "2025-11-25" and report["session"]
    assert report["closed"] is True
    tools = set(report["tools"])
    assert {"everything.trigger-sampling-request", "everything.trigger-elicitation-request"} <= tools
    assert all(name.startswith(("everything.", "gateway.")) for name in tools)
    assert set(RESOURCES) <= set(report["resources"])


@pytest.mark.e2e
def test_upstream_log_messages_reach_the_ts_client_and_its_set_level_is_accepted_and_audited(
    ts_run: Run,
) -> None:
    report = ts_run.report
    assert "logging" in report["server_capabilities"]
    logging = report["logging"]
    assert "error" not in logging, logging
    assert logging["set_level"] == {}
    # server-everything's simulated logging sends one message at a random level as it starts.
    message = logging["message"]
    assert message.get("level") in LEVELS and "message" in message.get("data", ""), message
    assert logging["started"].startswith("Started simulated")
    assert logging["stopped"].startswith("Stopped simulated")
    set_levels = [r for r in ts_run.audit if r.tool == "logging:setLevel"]
    assert [(r.kind, r.status, r.args.get("level")) for r in set_levels] == [
        ("intent", "", "debug"),
        ("outcome", "ok", None),
        ("intent", "", "info"),
        ("outcome", "ok", None),
        ("intent", "", "warning"),
        ("outcome", "ok", None),
    ]


@pytest.mark.e2e
def test_the_level_the_ts_client_set_decides_which_upstream_log_messages_reach_it(ts_run: Run) -> None:
    subscription = ts_run.report["subscription"]
    assert "error" not in subscription, subscription
    assert subscription["set_level_info"] == {} and subscription["set_level_warning"] == {}
    # The same `info` acknowledgement of a subscribe, once asked at `info`, once at `warning`.
    at_info = subscription["acknowledged_at_info"] or {}
    assert at_info.get("level") == "info" and RESOURCES[0] in at_info.get("data", ""), subscription
    assert subscription["acknowledged_at_warning"] is None


@pytest.mark.e2e
def test_the_ts_client_gets_updates_for_the_resources_it_subscribed_to_and_can_unsubscribe(
    ts_run: Run,
) -> None:
    report = ts_run.report
    assert report["server_capabilities"]["resources"]["subscribe"] is True
    subscription = report["subscription"]
    assert "error" not in subscription, subscription
    assert subscription["subscribe_at_info"] == {} and subscription["subscribe_at_warning"] == {}
    assert subscription["updated"] is True
    assert set(subscription["updates"]) <= set(RESOURCES)
    assert subscription["unsubscribe"] == [{}, {}]
    for uri in RESOURCES:
        key = f"resource:everything:{uri}"
        assert ts_run.exchange(key, "resources/subscribe") == [("intent", ""), ("outcome", "ok")]
        assert ts_run.exchange(key, "resources/unsubscribe") == [("intent", ""), ("outcome", "ok")]


@pytest.mark.e2e
def test_the_ts_clients_sampling_handler_answers_the_upstream_and_the_tool_result_carries_its_answer(
    ts_run: Run,
) -> None:
    sampling = ts_run.report["sampling"]
    assert "error" not in sampling, sampling
    asked = "Resource trigger-sampling-request context: name a prime"
    assert [m["content"]["text"] for m in sampling["asked"][0]["messages"]] == [asked]
    assert sampling["is_error"] is False
    assert f"sampled by the TypeScript client: {asked}" in sampling["text"]
    assert "ts-e2e-model" in sampling["text"]
    relayed = "everything:sampling/createMessage"
    assert ts_run.exchange(relayed) == [("intent", ""), ("outcome", "ok")]
    intent = ts_run.audit[ts_run.position("intent", relayed)]
    assert intent.args["messages"][0]["content"]["text"] == asked
    assert intent.detail["rule_ids"] == ["upstreams.everything.relay_requests"]
    # Asked and answered while the tool call was in flight.
    call = "everything.trigger-sampling-request"
    assert (
        ts_run.position("intent", call)
        < ts_run.position("intent", relayed)
        < ts_run.position("outcome", relayed)
        < ts_run.position("outcome", call)
    )


@pytest.mark.e2e
def test_the_ts_clients_elicitation_handler_answers_the_upstream_and_the_tool_result_carries_its_answer(
    ts_run: Run,
) -> None:
    elicitation = ts_run.report["elicitation"]
    assert "error" not in elicitation, elicitation
    asked = elicitation["asked"][0]
    assert asked["mode"] == "form" and asked["requestedSchema"]["required"] == ["name"]
    assert elicitation["is_error"] is False
    assert "- Name: Ada TypeScript" in elicitation["text"]
    assert "- Email: ada@example.com" in elicitation["text"]
    relayed = "everything:elicitation/create"
    assert ts_run.exchange(relayed) == [("intent", ""), ("outcome", "ok")]
    call = "everything.trigger-elicitation-request"
    assert (
        ts_run.position("intent", call)
        < ts_run.position("intent", relayed)
        < ts_run.position("outcome", relayed)
        < ts_run.position("outcome", call)
    )
