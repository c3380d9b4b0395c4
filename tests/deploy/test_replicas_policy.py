"""Policy agreement between replicas: every replica names the policy it serves by a content hash.

The version (``policy/version.py``) is SHA-256 over each policy file's base name and text, shortened
to 12 hex digits; ``/readyz`` shows it to admins with the load time, and every ``policy_reload``
audit record carries it. Two replicas watching one policy directory (a ConfigMap) report the new
version within a bounded time after an edit, and both keep the old one through a broken edit.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from replicas_harness import PG_DSN, cluster, replace_file, wait_until

from mcp_gateway.audit.postgres import PostgresAuditSink
from mcp_gateway.core.state import PolicyHolder
from mcp_gateway.policy.load import load_versioned_policy
from mcp_gateway.policy.version import VERSION_LENGTH, policy_version

POLICY = """\
version: 1
agents:
  alice:
    grants: [{id: alice-echo, tool: leaky.echo}]
"""
EDITED = POLICY.replace("alice-echo", "alice-echo-v2")


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ([("a.yaml", POLICY)], [("a.yaml", EDITED)]),
        ([("a.yaml", POLICY)], [("b.yaml", POLICY)]),
        ([("a.yaml", "xy"), ("b.yaml", "z")], [("a.yaml", "x"), ("b.yaml", "yz")]),
        ([("a.yaml", POLICY)], [("a.yaml", POLICY), ("b.yaml", "")]),
        ([("a.yaml", POLICY)], [("a.yaml", POLICY + " ")]),
    ],
    ids=["edited-text", "renamed-file", "text-moved-between-files", "added-empty-file", "trailing-space"],
)
def test_any_change_to_the_policy_files_changes_the_version(
    left: list[tuple[str, str]], right: list[tuple[str, str]]
) -> None:
    assert policy_version(left) != policy_version(right)


def test_the_version_ignores_where_the_directory_is_mounted() -> None:
    here = policy_version([("/etc/gateway/policies/a.yaml", POLICY)])
    there = policy_version([("/srv/config/a.yaml", POLICY)])
    assert here == there
    assert len(here) == VERSION_LENGTH and int(here, 16) >= 0


def test_a_reload_keeps_the_version_of_unchanged_files_and_a_broken_edit_keeps_the_running_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text(POLICY, encoding="utf-8")
    now = [1000.0]
    holder = PolicyHolder.load(tmp_path, clock=lambda: now[0])
    first = holder.version
    assert first == load_versioned_policy(tmp_path)[1] == policy_version([("a.yaml", POLICY)])
    now[0] = 2000.0
    assert holder.reload() is None
    assert holder.version == first and holder.loaded_at == 2000.0
    (tmp_path / "a.yaml").write_text("version: 1\nagents: [", encoding="utf-8")
    now[0] = 3000.0
    assert holder.reload() is not None
    assert holder.version == first and holder.loaded_at == 2000.0 and holder.last_error
    (tmp_path / "a.yaml").write_text(EDITED, encoding="utf-8")
    assert holder.reload() is None
    assert holder.version == policy_version([("a.yaml", EDITED)]) != first
    assert holder.loaded_at == 3000.0 and holder.last_error is None


@pytest.mark.e2e
def test_two_replicas_watching_one_policy_directory_report_the_same_new_version_after_an_edit(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path, POLICY, ["alice"], count=2) as c:
        c.start(haproxy=None)
        replicas = c.replicas
        first = {r.name: r.detail()["policy_version"] for r in replicas}
        assert set(first.values()) == {load_versioned_policy(c.policies)[1]}
        # Anyone may ask whether a replica is ready; only an admin learns which policy it serves.
        anonymous = httpx.get(f"{replicas[0].base}/readyz", timeout=5)
        assert anonymous.json() == {"ready": True}
        assert first[replicas[0].name] not in anonymous.text + str(anonymous.headers)

        replace_file(c.policies / "policy.yaml", EDITED)
        edited = time.monotonic()
        expected = policy_version([("policy.yaml", EDITED)])
        wait_until(
            lambda: all(r.detail()["policy_version"] == expected for r in replicas),
            10,
            "both replicas to load the edited policy",
        )
        agreed_after = time.monotonic() - edited
        assert agreed_after < 10
        loaded_at = {r.name: r.detail()["policy_loaded_at"] for r in replicas}
        assert all(t > time.time() - 60 for t in loaded_at.values())

        # A broken edit: both keep serving (and naming) the last good policy.
        replace_file(c.policies / "policy.yaml", "version: 1\nagents: [")
        wait_until(
            lambda: all(r.detail()["policy"] != "ok" for r in replicas),
            10,
            "both replicas to refuse the edit",
        )
        assert {r.detail()["policy_version"] for r in replicas} == {expected}

        with PostgresAuditSink(PG_DSN, schema=c.schema, create=False) as sink:
            reloads = sink.query(kind="policy_reload", limit=100)
        good = [r for r in reloads if r.status == "ok" and r.detail.get("version") == expected]
        bad = [r for r in reloads if r.status == "error" and r.detail.get("version") == expected]
        moved = [r for r in good if r.detail["previous_version"] == first["r1"]]
        assert len(moved) >= 2, [r.detail for r in reloads]
        assert len(bad) >= 2, reloads
