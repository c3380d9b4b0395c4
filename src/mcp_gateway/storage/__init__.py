"""What the SQL stores share: one connection per store for SQLite or PostgreSQL (``database.py``) and
the versioned PostgreSQL schema migrations (``migrate.py``).

A store writes its statements once, as text with ``{name}`` placeholders for tables and types and
``%s`` for parameters; ``Database.prepare`` turns that text into the dialect's statement (a quoted,
schema-qualified identifier on PostgreSQL, ``?`` parameters on SQLite). Nothing here knows any
store's tables: each store package owns its statements and its migrations.

``lease.py``: the named leases (a PostgreSQL advisory lock per service) under which a deployment of
several replicas runs its deployment-wide services once.
"""
