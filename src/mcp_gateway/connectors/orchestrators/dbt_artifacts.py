"""Reading dbt's artifacts: ``run_results.json``, ``manifest.json`` and ``sources.json`` (pure, no I/O).

What the gateway takes from them:

- from ``run_results.json``: each node's status, message, failing rows count and compiled SQL;
- from ``manifest.json``: the lineage (``child_map`` / ``parent_map``), which source reads a table
  (by schema and identifier), and the relations the models build;
- from ``sources.json`` (``dbt source freshness``): each source's freshness status and age.

An artifact in an unexpected shape is an ``OrchestratorUnavailable`` (dbt answered garbage), never a
``KeyError`` deep in a tool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_gateway.connectors.orchestrators.base import OrchestratorUnavailable

FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})
"""Node statuses that fail a run (``warn`` and ``skipped`` do not)."""
SQL_CHARS = 4000
MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class NodeResult:
    """One node of a dbt run, as ``run_results.json`` reports it."""

    unique_id: str
    status: str
    message: str | None
    failures: int | None
    compiled_sql: str | None

    @property
    def resource_type(self) -> str:
        return self.unique_id.split(".", 1)[0]

    @property
    def name(self) -> str:
        # test.<package>.<name>.<hash>, model.<package>.<name>, source.<package>.<source>.<table>
        parts = self.unique_id.split(".")
        return parts[2] if len(parts) > 2 else self.unique_id

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OrchestratorUnavailable(f"dbt wrote {what} in an unexpected shape")
    return value


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def node_results(run_results: Any) -> list[NodeResult]:
    """The nodes of a ``run_results.json`` document, in dbt's order."""
    results = _dict(run_results, "run_results.json").get("results")
    if not isinstance(results, list):
        raise OrchestratorUnavailable("dbt wrote run_results.json without `results`")
    nodes = []
    for raw in results:
        item = _dict(raw, "a run result")
        unique_id, status = item.get("unique_id"), item.get("status")
        if not isinstance(unique_id, str) or not isinstance(status, str):
            raise OrchestratorUnavailable("dbt wrote a run result without `unique_id` or `status`")
        failures = item.get("failures")
        nodes.append(
            NodeResult(
                unique_id=unique_id,
                status=status,
                message=_text(item.get("message"), MESSAGE_CHARS),
                failures=failures if isinstance(failures, int) and not isinstance(failures, bool) else None,
                compiled_sql=_text(item.get("compiled_code"), SQL_CHARS),
            )
        )
    return nodes


def describe_failed(node: NodeResult, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A failed node as the agent sees it: what it is, why it failed, the SQL dbt ran for it."""
    facts: dict[str, Any] = {
        "node": node.unique_id,
        "resource_type": node.resource_type,
        "name": node.name,
        "status": node.status,
    }
    if node.message:
        facts["message"] = node.message
    if node.failures is not None:
        facts["failing_rows"] = node.failures
    if node.compiled_sql:
        facts["compiled_sql"] = node.compiled_sql.strip()
    if manifest is not None:
        spec = _nodes(manifest).get(node.unique_id, {})
        if isinstance(spec.get("original_file_path"), str):
            facts["file"] = spec["original_file_path"]
        parents = parent_map(manifest).get(node.unique_id, [])
        if parents:
            facts["depends_on"] = list(parents)
    return facts


def _nodes(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    nodes = manifest.get("nodes")
    if not isinstance(nodes, dict):
        raise OrchestratorUnavailable("dbt wrote manifest.json without `nodes`")
    return nodes


def _sources(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    sources = manifest.get("sources")
    if not isinstance(sources, dict):
        raise OrchestratorUnavailable("dbt wrote manifest.json without `sources`")
    return sources


def _edges(manifest: Mapping[str, Any], key: str) -> dict[str, list[str]]:
    edges = manifest.get(key)
    if not isinstance(edges, dict):
        raise OrchestratorUnavailable(f"dbt wrote manifest.json without `{key}`")
    return edges


def parent_map(manifest: Mapping[str, Any]) -> dict[str, list[str]]:
    """Node id → the ids it depends on."""
    return _edges(manifest, "parent_map")


def source_for(manifest: Mapping[str, Any], schema: str, table: str) -> str | None:
    """The id of the source that reads ``schema.table`` (PostgreSQL names fold to lowercase), if any."""
    want = (schema.lower(), table.lower())
    for unique_id, spec in _sources(manifest).items():
        if (str(spec.get("schema", "")).lower(), str(spec.get("identifier", "")).lower()) == want:
            return unique_id
    return None


def source_identifier(manifest: Mapping[str, Any], source_id: str) -> str | None:
    """The relation name a source reads (as the project's vars resolved it)."""
    spec = _sources(manifest).get(source_id)
    return str(spec["identifier"]) if spec and isinstance(spec.get("identifier"), str) else None


def downstream_models(manifest: Mapping[str, Any], start: str) -> list[dict[str, Any]]:
    """Every model downstream of node ``start`` (transitively, through ``child_map``), in name order.

    Each entry: ``unique_id``, ``name``, ``fqn`` (the ``--select fqn:`` value), ``relation``.
    """
    children, nodes = _edges(manifest, "child_map"), _nodes(manifest)
    seen: set[str] = set()
    queue = list(children.get(start, []))
    while queue:
        node = queue.pop()
        if node in seen:
            continue
        seen.add(node)
        queue.extend(children.get(node, []))
    models = []
    for unique_id in seen:
        spec = nodes.get(unique_id, {})
        if spec.get("resource_type") != "model":
            continue
        fqn = spec.get("fqn")
        if not isinstance(fqn, list) or not all(isinstance(p, str) for p in fqn):
            raise OrchestratorUnavailable(f"dbt wrote model `{unique_id}` without `fqn`")
        models.append(
            {
                "unique_id": unique_id,
                "name": str(spec.get("name", unique_id)),
                "fqn": ".".join(fqn),
                "relation": spec.get("relation_name"),
            }
        )
    return sorted(models, key=lambda m: (m["name"], m["unique_id"]))


def upstream_sources(manifest: Mapping[str, Any], node_ids: Iterable[str]) -> list[str]:
    """The sources that ``node_ids`` read, directly or through other nodes, sorted."""
    parents = parent_map(manifest)
    seen: set[str] = set()
    queue = list(node_ids)
    while queue:
        node = queue.pop()
        for parent in parents.get(node, []):
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return sorted(n for n in seen if n.startswith("source."))


def model_relations(manifest: Mapping[str, Any]) -> set[str]:
    """The relations (``"db"."schema"."name"``) that the project's models build."""
    return {
        str(spec["relation_name"]).lower()
        for spec in _nodes(manifest).values()
        if spec.get("resource_type") in ("model", "snapshot", "seed") and spec.get("relation_name")
    }


def source_relations(manifest: Mapping[str, Any]) -> set[str]:
    """The relations the project's sources read."""
    return {str(s["relation_name"]).lower() for s in _sources(manifest).values() if s.get("relation_name")}


def freshness(sources_json: Any) -> list[dict[str, Any]]:
    """Each source's freshness from ``dbt source freshness``'s ``sources.json``."""
    results = _dict(sources_json, "sources.json").get("results")
    if not isinstance(results, list):
        raise OrchestratorUnavailable("dbt wrote sources.json without `results`")
    out = []
    for raw in results:
        item = _dict(raw, "a freshness result")
        entry = {
            "source": item.get("unique_id"),
            "status": item.get("status"),
            "max_loaded_at": item.get("max_loaded_at"),
            "age_seconds": item.get("max_loaded_at_time_ago_in_s"),
        }
        criteria = item.get("criteria")
        if isinstance(criteria, dict):
            entry["criteria"] = criteria
        if isinstance(item.get("error"), str):
            entry["error"] = item["error"][:MESSAGE_CHARS]
        out.append({k: v for k, v in entry.items() if v is not None})
    return out
