"""Incidents: what a failing quality monitor raised, and how it was resolved (the failure memory).

``model.py`` is the incident; ``store.py`` keeps incidents in SQLite or the shared PostgreSQL schema.
Monitors (``monitors/``) open and close them; ``ops.get_failure_context`` shows them to agents.
"""
