"""The quickstart as a user runs it: `mcp-gateway quickstart` serving, `mcp-gateway demo ...` as the agent,
`mcp-gateway approvals approve` as the human, then the audit log verified."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import free_port, wait_until

pytestmark = pytest.mark.e2e

EXE = Path(sys.executable).parent / "mcp-gateway"


def _cli(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(EXE), *args], capture_output=True, text=True, timeout=120, check=False, input=stdin
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("qs") / "demo"
    port = free_port()
    while any(not _free(p) for p in (port + 1, port + 2)):
        port = free_port()
    log = (directory.parent / "quickstart.log").open("w")
    proc = subprocess.Popen(
        [str(EXE), "quickstart", "--dir", str(directory), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60, what="quickstart gateway")
        yield directory
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _free(port: int) -> bool:
    import socket

    # Bind, not connect: a port held by some process's outgoing connection accepts no connection
    # but cannot be listened on either.
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_story_two_fixes_the_amount_on_a_branch_switches_it_in_and_rolls_it_back(quickstart: Path) -> None:
    out = _cli("demo", "fix-amount", "--dir", str(quickstart))
    lines = out.splitlines()
    # The agent finds the bad row by reading the table (data.sample_rows), not from a hard-coded id.
    sampled = lines[next(i for i, line in enumerate(lines) if "data.sample_rows" in line) + 1]
    assert '"rows": [[3, "Initech platform", 10000000.0]]' in sampled and sampled.lstrip().startswith("✓")
    refused_main = next(
        i for i, line in enumerate(lines) if '"branch": "main"' in line and "update_rows" in line
    )
    assert lines[refused_main + 1].lstrip().startswith("✗")  # a write aimed at production is refused
    switched = next(line for line in lines if '"after_snapshot"' in line and '"checks"' in line)
    assert switched.lstrip().startswith("✓")
    assert '"max(amount)", "value": 1200000.0' in switched  # verified on the branch before the switch
    rollback = lines[next(i for i, line in enumerate(lines) if "data.rollback_table" in line) + 1]
    assert rollback.lstrip().startswith("✓")


def test_stories_one_and_three_show_an_empty_table_and_mixed_currencies(quickstart: Path) -> None:
    out = _cli("demo", "checks", "--dir", str(quickstart))
    assert '"check": "row_count", "value": 0, "min": 1.0, "max": null, "passed": false' in out
    assert '"check": "named(distinct_currencies)", "value": 2' in out


def test_a_failed_dbt_job_is_rerun_from_the_failure_once(quickstart: Path) -> None:
    out = _cli("demo", "rerun", "--dir", str(quickstart))
    assert "relation raw.orders does not exist" in out  # the failure context reached the agent
    assert '"state": "success"' in out
    assert '"already_launched": true' in out


def test_a_ten_fold_salesforce_change_runs_only_after_a_human_approves_it(quickstart: Path) -> None:
    config = str(quickstart / "gateway.yaml")
    out = _cli("demo", "patch", "--dir", str(quickstart))
    approval_id = re.search(r'"approval_id": "(apr_[^"]+)"', out)
    assert approval_id is not None and '"status": "pending_approval"' in out
    assert approval_id.group(1) in _cli("approvals", "list", "-c", config)
    admin_token = _cli("admin", "create", "alice", "-c", config).strip()
    _cli("approvals", "approve", "-c", config, approval_id.group(1), stdin=admin_token + "\n")
    done = _cli("demo", "patch", "--dir", str(quickstart), "--approval-id", approval_id.group(1))
    assert '"before": {"Amount": 10000000.0}' in done and '"after": {"Amount": 1000000.0}' in done
    rerun = done.splitlines()[
        next(i for i, line in enumerate(done.splitlines()) if "ops.rerun_job" in line) + 1
    ]
    assert rerun.lstrip().startswith("✓")  # the pipeline that read the wrong amount is re-run
    audit_id = re.search(r'"audit_id": "([0-9a-f]+)"', done)
    assert audit_id is not None
    replay = _cli("demo", "patch", "--dir", str(quickstart), "--approval-id", approval_id.group(1))
    assert "already used" in replay
    reverted = _cli("demo", "revert", "--dir", str(quickstart), "--audit-id", audit_id.group(1))
    assert "✓" in reverted
    verify = _cli("audit", "verify", "-c", config)
    assert verify.startswith("ok:") and "chain intact" in verify
