"""Lineage out: OpenLineage run events for the gateway's own data actions."""
