"""Attack: a malicious upstream holds 100+ vault secrets and tries to leak every one of them.

The canaries are random, 16-40 characters, drawn from alphabets that stress each encoding (base64's
``+/=``, URL's ``&%=?#``, JSON's ``"`` and ``\\``, non-ASCII). The upstream (fixtures/canary_upstream.py)
echoes them raw, base64, URL-encoded, hex and JSON-escaped in results (text and structured), error
messages, protocol errors, tool names, descriptions and schemas, log notifications and stack traces.
None may reach what the agent receives, a gateway log line, an audit record or an exported span; and
the upstream must really have held them (their SHA-256, a form nobody scrubs, comes back intact).

The attack runs once per module (a gateway with 120 secrets costs seconds); each sink is its own
test, so a leak into one is reported without hiding the others. Log records are captured at DEBUG for
the ``mcp_gateway`` and ``mcp`` loggers by a handler like ``caplog``'s, installed for the module.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import random
import string
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from conftest import (
    ERAS,
    FIXTURES,
    GatewayFactory,
    RunningGateway,
    connect,
    fresh_span_exporter,
    gateways,
    wait_until,
)

pytestmark = pytest.mark.e2e

CANARY = FIXTURES / "canary_upstream.py"
N_CANARIES = 120

ALPHABETS = (
    string.ascii_letters + string.digits,
    string.ascii_letters + string.digits + "+/=",
    string.ascii_letters + "&%=?#",
    string.ascii_letters + '"\\',
    string.ascii_letters + string.digits + '+/=&%"\\',
    string.ascii_letters + string.punctuation,
    string.ascii_lowercase + "éüßø€✓",
)

POLICY = """\
version: 1
agents:
  agent-a:
    grants:
      - id: a-canary
        tool: "canary.*"
"""

# The canary upstream's tools the agent calls (the one named after a canary it cannot know).
CALLS = ("dump", "fail", "protocol_error", "crash", "notify", "described")


def make_canaries(rng: random.Random, n: int = N_CANARIES) -> dict[str, str]:
    """``n`` random secrets named ``canary-<i>``; every alphabet is used, each value is unique."""
    canaries: dict[str, str] = {}
    for i in range(n):
        alphabet = ALPHABETS[i % len(ALPHABETS)]
        canaries[f"canary-{i}"] = "".join(rng.choice(alphabet) for _ in range(rng.randint(16, 40)))
    assert len(set(canaries.values())) == n
    return canaries


def canary_stdio(call_log: Path, canaries: dict[str, str], **extra_env: str) -> dict[str, Any]:
    """The canary upstream's config: the gateway injects every canary from its vault as ``CANARY_<i>``."""
    env = {name.replace("canary-", "CANARY_"): f"secret://{name}" for name in canaries}
    return {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(CANARY)],
        "env": {"CANARY_CALL_LOG": str(call_log), **env, **extra_env},
    }


def leak_forms(value: str) -> set[str]:
    """Every form of ``value`` this test searches for, computed independently of the redactor."""
    raw = value.encode()
    found = {
        value,
        raw.hex(),
        raw.hex().upper(),
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        json.dumps(json.dumps(value)[1:-1])[1:-1],
    }
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        # Inside a longer blob: the characters that depend on the value's bytes alone, at each of the
        # three alignments it can take in a 3-byte group (shift 0 is the plain encoding).
        for shift in (0, 1, 2):
            blob = encode(b"\0" * shift + raw).decode().rstrip("=")
            found.add(blob[-(-8 * shift // 6) : (8 * (shift + len(raw))) // 6])
    return found


def find_leaks(canaries: dict[str, str], texts: Iterable[str]) -> list[str]:
    """One line per canary form found in ``texts``; empty when nothing leaked."""
    haystack = "\n".join(texts)
    return [
        f"{name}: {form!r}"
        for name, value in canaries.items()
        for form in sorted(leak_forms(value))
        if form in haystack
    ]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def seen_by_agent(obj: Any) -> list[str]:
    """What the agent gets of an SDK result: its wire JSON and every string inside it."""
    return [obj.model_dump_json(by_alias=True), *_strings(obj.model_dump(by_alias=True, mode="json"))]


class _Capture(logging.Handler):
    """Keeps every record, formatted with its exception and traceback (what a log file would hold)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def capture_logs(*names: str) -> Iterator[_Capture]:
    """Capture records of ``names`` at DEBUG from every thread, like ``caplog.set_level``."""
    handler = _Capture()
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    root = logging.getLogger()
    root.addHandler(handler)
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


async def drive_attack(gw: RunningGateway) -> list[str]:
    """List and call every canary tool in both protocol eras; return all the agent received."""
    received: list[str] = []
    for mode in ERAS:
        async with connect(gw.url, gw.tokens["agent-a"], mode) as client:
            received += seen_by_agent(await client.list_tools())
            for tool in CALLS:
                try:
                    received += seen_by_agent(await client.call_tool(f"canary.{tool}", {}))
                except MCPError as exc:
                    received += [str(exc), exc.message, json.dumps(exc.data)]
    return received


@dataclasses.dataclass
class Exposure:
    """Everything the attack could have reached."""

    seed: int
    canaries: dict[str, str]
    gateway: RunningGateway
    calls: Path
    received: list[str]
    log: str
    audit: list[str]
    spans: list[str]


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exposure]:
    seed = random.SystemRandom().randrange(2**32)
    canaries = make_canaries(random.Random(seed))  # noqa: S311 - seeded, so a failure can be replayed
    root = tmp_path_factory.mktemp("canary")
    exporter = fresh_span_exporter()
    with capture_logs("mcp_gateway", "mcp") as logs, gateways(root) as factory:
        calls = root / "calls.log"
        upstreams = {"canary": canary_stdio(calls, canaries)}
        gw = factory(POLICY, secrets=canaries, upstreams=upstreams, watch_policy=False)
        received = anyio.run(drive_attack, gw)
        # The upstream printed its tracebacks to stderr; wait (bounded) until the gateway logged them.
        wait_until(
            lambda: "RuntimeError: crash: " in logs.text and "RuntimeError: startup: " in logs.text,
            what="the upstream's stderr in the gateway log",
        )
        yield Exposure(
            seed=seed,
            canaries=canaries,
            gateway=gw,
            calls=calls,
            received=received,
            log=logs.text,
            audit=[json.dumps(dataclasses.asdict(r), ensure_ascii=False) for r in gw.audit()],
            spans=[span.to_json(indent=None) for span in exporter.get_finished_spans()],
        )


def test_the_upstream_really_held_every_canary_and_echoed_each_in_every_channel(attack: Exposure) -> None:
    everything = "\n".join(attack.received)
    for name, value in attack.canaries.items():
        # The SHA-256 is a form nobody scrubs: it proves the upstream had the value.
        assert hashlib.sha256(value.encode()).hexdigest() in everything, f"{name} never reached the upstream"
        assert f"[REDACTED:{name}]" in everything, name
    calls = attack.calls.read_text().splitlines()
    assert sorted(calls) == sorted(CALLS * len(ERAS))
    outcomes = [r for r in attack.gateway.audit() if r.kind == "outcome" and r.tool == "canary.dump"]
    assert len(outcomes) == len(ERAS)
    assert all(r.detail["redactions"] > len(attack.canaries) for r in outcomes)


def test_no_canary_reaches_the_agent_in_either_protocol_era(attack: Exposure) -> None:
    # Descriptions, schemas, titles and a canary-named tool were all in tools/list: scrubbed.
    assert any("[REDACTED:canary-0]" in text and "canary.t_" in text for text in attack.received)
    leaks = find_leaks(attack.canaries, attack.received)
    assert leaks == [], f"seed {attack.seed}: {len(leaks)} leaks to the agent, e.g. {leaks[:5]}"


def test_no_canary_reaches_a_gateway_log_line(attack: Exposure) -> None:
    # The upstream's tracebacks were logged, scrubbed.
    assert "RuntimeError: crash: [REDACTED:canary-" in attack.log
    assert "RuntimeError: startup: [REDACTED:canary-" in attack.log
    leaks = find_leaks(attack.canaries, [attack.log])
    assert leaks == [], f"seed {attack.seed}: {len(leaks)} leaks to the log, e.g. {leaks[:5]}"


def test_no_canary_reaches_an_audit_record(attack: Exposure) -> None:
    assert sum('"kind": "outcome"' in r for r in attack.audit) == len(CALLS) * len(ERAS)
    leaks = find_leaks(attack.canaries, attack.audit)
    assert leaks == [], f"seed {attack.seed}: {len(leaks)} leaks to the audit, e.g. {leaks[:5]}"


def test_no_canary_reaches_an_exported_span(attack: Exposure) -> None:
    assert sum('"mcp.method.name": "tools/call"' in s for s in attack.spans) == len(CALLS) * len(ERAS)
    leaks = find_leaks(attack.canaries, attack.spans)
    assert leaks == [], f"seed {attack.seed}: {len(leaks)} leaks to the spans, e.g. {leaks[:5]}"


@pytest.mark.anyio
async def test_canaries_an_upstream_prints_as_garbage_on_stdout_reach_no_log_line(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG, logger="mcp_gateway")
    caplog.set_level(logging.DEBUG, logger="mcp")
    canaries = make_canaries(random.Random(), n=8)  # noqa: S311 - test data, not keys
    upstream = canary_stdio(tmp_path / "calls.log", canaries, CANARY_STDOUT_GARBAGE="1")
    gw = make_gateway(POLICY, secrets=canaries, upstreams={"canary": upstream}, watch_policy=False)
    async with connect(gw.url, gw.tokens["agent-a"]) as client:
        result = await client.call_tool("canary.dump", {})
    assert hashlib.sha256(canaries["canary-0"].encode()).hexdigest() in result.model_dump_json()
    leaks = find_leaks(canaries, [caplog.text, *(r.getMessage() for r in caplog.records)])
    assert leaks == [], f"{len(leaks)} leaks to the log, e.g. {leaks[:5]}"
