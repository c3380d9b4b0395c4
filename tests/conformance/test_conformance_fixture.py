"""The conformance fixture upstream, with no gateway in front, passes every scenario the official MCP
conformance suite scores for each protocol era, so a scenario lost through the gateway (the parity
test) is the gateway's doing, never a fixture gap.

Scored: for 2025-11-25 every scenario ``@modelcontextprotocol/conformance@0.1.16`` runs (it has no
requirement sets; all 30 are active); for 2026-07-28 the ``server`` list of the requirement set that
``0.2.0-alpha.12`` ships (``requirements/2026-07-28.yaml``, 37 scenarios). The suite also runs, without
scoring them, the tasks extension (SEP-2663) and scenarios still pending in the suite itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conformance_harness import NodeTools, node_tools, run_suite
from test_conformance_parity import direct_upstream

from conftest import SUMMARY

__all__ = ["direct_upstream", "node_tools"]  # fixtures, re-exported for pytest

SCORED_COUNT = {"2025-11-25": 30, "2026-07-28": 37}


def _scored(tools: NodeTools, era: str, results: dict[str, bool]) -> dict[str, bool]:
    """The era's scored scenarios, each → passed; one the suite did not run counts as failed."""
    if era == "2025-11-25":
        return results
    package = tools.conformance[era].parents[1] / "@modelcontextprotocol" / "conformance"
    requirements = yaml.safe_load((package / "requirements" / f"{era}.yaml").read_text())
    return {name: results.get(name, False) for name in requirements["server"]}


@pytest.mark.e2e
@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
def test_the_fixture_alone_passes_every_scored_scenario(
    era: str, node_tools: NodeTools, direct_upstream: str, tmp_path: Path
) -> None:
    results = run_suite(node_tools, era, direct_upstream, tmp_path / "direct")
    scored = _scored(node_tools, era, results)
    failed = sorted(name for name, ok in scored.items() if not ok)
    unscored = sorted(name for name in results if name not in scored)
    SUMMARY.append(
        f"conformance [{era}] fixture alone: {len(scored) - len(failed)}/{len(scored)} scored pass; "
        f"unscored passing {sum(results[n] for n in unscored)}/{len(unscored)}"
    )
    assert len(scored) == SCORED_COUNT[era], (
        f"expected {SCORED_COUNT[era]} scored scenarios: {sorted(scored)}"
    )
    assert not failed, f"scored scenarios the fixture fails (see {tmp_path}/direct/*/checks.json): {failed}"
