"""The files ``quickstart`` writes: the demo's ``gateway.yaml`` and its policy."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

DBT_ACCOUNT = 1
DBT_JOB = 42
SF_CLIENT_ID = "mcp-gateway-demo"

POLICY = """\
# Demo policy: what `demo-agent` may do. Edit it while the gateway runs; it reloads on save.
version: 1
agents:
  demo-agent:
    description: the quickstart's agent
    rate: ["500/hour"]
    grants:
      - id: demo-current-time
        tool: time.get_current_time
        args:
          timezone: {in: [UTC, Europe/Paris, America/New_York, Asia/Tokyo], required: true}
      - id: demo-convert-time
        tool: time.convert_time
        args:
          source_timezone: {pattern: "^[A-Za-z_]+/[A-Za-z_]+$|^UTC$"}
          target_timezone: {pattern: "^[A-Za-z_]+/[A-Za-z_]+$|^UTC$"}
          time: {pattern: "^[0-2][0-9]:[0-5][0-9]$"}
        deny:
          - id: demo-no-pyongyang
            args: {target_timezone: {in: [Asia/Pyongyang]}}
            reason: the demo forbids this target

      # Data fixes: only on branches named agent_*, at most 10 rows per call, in lake.sales.
      - id: demo-data-read
        tool: data.query_quality_metrics
        args:
          table: {pattern: "lake\\\\.sales\\\\..+", required: true}
      - id: demo-data-sample              # find the bad rows: 20 at most, production or a branch
        tool: data.sample_rows
        max_rows: 20
        read: {tables: ["lake.sales.*"], production: true}
      - id: demo-data-query               # one read-only SELECT, checked before it runs
        tool: data.query
        max_rows: 20
        read: {tables: ["lake.sales.*"], production: true, timeout_ms: 5000}
      - id: demo-data-branch
        tool: data.clone_table
        args:
          table: {pattern: "lake\\\\.sales\\\\..+", required: true}
          branch: {pattern: "agent_[a-z0-9_]+", required: true}
      - id: demo-data-write
        tool: data.update_rows
        max_rows: 10
        args:
          table: {pattern: "lake\\\\.sales\\\\..+", required: true}
          branch: {pattern: "agent_[a-z0-9_]+", required: true}
      - id: demo-data-switch
        tool: data.switch_in
        args:
          table: {pattern: "lake\\\\.sales\\\\..+", required: true}
          branch: {pattern: "agent_[a-z0-9_]+", required: true}
      - id: demo-data-undo
        tool: data.rollback_table
        args:
          table: {pattern: "lake\\\\.sales\\\\..+", required: true}
      - id: demo-data-discard
        tool: data.discard_branch
        args:
          branch: {pattern: "agent_[a-z0-9_]+", required: true}

      # Pipeline reruns: one job, at most 10 an hour.
      - id: demo-rerun
        tool: ops.rerun_job
        args:
          job: {in: [nightly_revenue], required: true}
          mode: {in: [failed_only, full]}
        rate: ["10/hour"]
      - id: demo-job-read
        tool: "ops.get_*"
        args:
          job: {in: [nightly_revenue], required: true}
      - id: demo-runbooks                 # runbooks are MCP resources too
        tool: "resource:gateway:runbook://*"

      # Salesforce: two fields of opportunities in the sandbox org; a 5x change of Amount needs a human.
      - id: demo-sf-read
        tool: salesforce.get_record
        args:
          org: {in: [sandbox]}
          object: {in: [Opportunity]}
      - id: demo-sf-patch
        tool: salesforce.patch_record
        args:
          org: {in: [sandbox], required: true}
          object: {in: [Opportunity], required: true}
          fields:
            required: true
            subset_of: [Amount, StageName]
            properties: {Amount: {min: 0, max: 100000000}}
        approval:
          when:
            - change_factor: {field: Amount, over: 5}
      - id: demo-sf-revert
        tool: salesforce.revert_patch

runbooks:
  nightly_revenue: >-
    Fails when raw.orders has not landed. Check the export, then rerun failed_only; a full rerun
    rebuilds every model and takes an hour.
"""


def gateway_yaml(directory: Path, port: int, heal: Mapping[str, str] | None = None) -> str:
    """The quickstart's ``gateway.yaml``; ``heal`` adds ``quickstart --postgres``'s lines to the
    ``warehouses``, ``orchestrators`` and ``jobs`` sections and a ``monitors`` section (``quickstart_pg``)."""
    extra = dict(heal or {})
    python = sys.executable
    lake = directory / "data" / "iceberg"
    return f"""\
# Quickstart gateway: embedded defaults (SQLite audit, vault, approvals, quotas in ./data).
data_dir: data
policies: policies
server:
  host: 127.0.0.1
  port: {port}
upstreams:
  time:
    transport: stdio
    command: {python}
    args: [-m, mcp_gateway.demo.time_server]       # a small MCP server shipped in the package
    env:
      # Injected from the vault at spawn time; the agent never sees it.
      DEMO_API_TOKEN: secret://demo-api-token
warehouses:
  lake:
    kind: iceberg
    catalog_uri: sqlite:///{lake / "catalog.db"}
    warehouse: {lake / "warehouse"}
{extra.get("warehouses", "")}orchestrators:
  dbt:
    kind: dbt_cloud
    url: http://127.0.0.1:{port + 2}      # the dbt Cloud emulator `quickstart` starts
    allow_private_network: true          # loopback on purpose (else the SSRF guard refuses it)
    account_id: {DBT_ACCOUNT}
    token: secret://dbt-token
{extra.get("orchestrators", "")}jobs:
  nightly_revenue: {{orchestrator: dbt, id: "{DBT_JOB}"}}
{extra.get("jobs", "")}salesforce:
  sandbox:
    login_url: http://127.0.0.1:{port + 1}   # the Salesforce emulator `quickstart` starts
    allow_private_network: true
    flow: client_credentials
    client_id: {SF_CLIENT_ID}
    client_secret: secret://sf-sandbox-secret
console:
  enabled: true                          # the security console: http://127.0.0.1:{port}/console
  roles: {{you: admin}}                    # log in with the token of `mcp-gateway admin create you`
{extra.get("monitors", "")}"""


def demo_policy() -> str:
    """The policy text plus the data stories' table rules and metrics (from ``warehouse.demo``)."""
    from mcp_gateway.demo.lake import DEMO_POLICY

    sections = yaml.safe_dump(
        {"tables": DEMO_POLICY["tables"], "metrics": DEMO_POLICY["metrics"]}, sort_keys=False, width=100
    )
    return POLICY + "\n# The data stories' quality gates (switch-in runs them on the branch).\n" + sections
