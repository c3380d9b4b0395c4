"""Conformance parity: every MCP conformance server scenario that passes against the upstream directly
must pass through the gateway fronting it (both protocol eras). Pass sets go to the test output and to
``bench/results/conformance.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conformance_harness import AuthProxy, NodeTools, node_tools, run_suite

from conftest import SUMMARY, GatewayFactory, free_port, wait_until

__all__ = ["node_tools"]  # the session fixture, re-exported for pytest

FIXTURE = Path(__file__).parents[1] / "fixtures" / "conformance_server.py"
RESULTS = Path(__file__).parents[2] / "bench" / "results" / "conformance.json"
GRANT_ALL = """
version: 1
agents:
  agent-a:
    grants:
      - id: everything
        tool: "*"
"""

# Scenarios that pass directly but not through the gateway, each with its reason. Keep this the one list.
KNOWN_GAPS: dict[str, str] = {}


@pytest.fixture
def direct_upstream(tmp_path: Path) -> Iterator[str]:
    """The conformance fixture served over Streamable HTTP in its own process."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURE), "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/mcp"), what="conformance fixture")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _answers(url: str) -> bool:
    import httpx

    try:
        httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def _record(era: str, direct: dict[str, bool], gateway: dict[str, bool]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[era] = {
        "direct_pass": sorted(s for s, ok in direct.items() if ok),
        "gateway_pass": sorted(s for s, ok in gateway.items() if ok),
        "known_gaps": {s: r for s, r in KNOWN_GAPS.items() if direct.get(s) and not gateway.get(s)},
    }
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.mark.e2e
@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
def test_every_scenario_passing_directly_passes_through_the_gateway(
    era: str, node_tools: NodeTools, direct_upstream: str, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    # The suite's sampling, elicitation and roots scenarios need the upstream's requests relayed.
    relayed = ["sampling", "elicitation", "roots"]
    upstream: dict[str, object]
    if era == "2025-11-25":
        # The fixture sends its requests mid-call, which only a 2025-11-25 session allows.
        upstream = {"transport": "stdio", "command": sys.executable, "args": [str(FIXTURE), "stdio"]}
        upstream |= {"relay_requests": relayed, "protocol": "legacy"}
    else:
        # Over HTTP the gateway forwards each request's client capabilities (as far as relay_requests
        # allows), which the capability-check scenario needs; an SDK stdio client declares its own.
        upstream = {"transport": "http", "url": direct_upstream, "allow_private_network": True}
        upstream |= {"relay_requests": relayed}
    # The suite calls tools and prompts by the fixture's own names: offer them unprefixed.
    upstream["prefix"] = ""
    gw = make_gateway(GRANT_ALL, upstreams={"conf": upstream}, watch_policy=False)
    direct = run_suite(node_tools, era, direct_upstream, tmp_path / "direct")
    with AuthProxy(gw.url, gw.tokens["agent-a"]).serve() as proxy:
        through = run_suite(node_tools, era, proxy.url, tmp_path / "gateway")
    for label, results in (("direct", direct), ("gateway", through)):
        passed = sorted(s for s, ok in results.items() if ok)
        SUMMARY.append(f"conformance [{era}] {label}: {len(passed)}/{len(results)} pass: {', '.join(passed)}")
    _record(era, direct, through)
    assert direct, "the suite ran no scenario"
    lost = sorted(s for s, ok in direct.items() if ok and not through.get(s) and s not in KNOWN_GAPS)
    assert not lost, f"pass directly but fail through the gateway: {lost}"
