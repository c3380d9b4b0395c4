"""Human approvals: a call that needs one is refused with a pending request; an admin approves or
denies it (``mcp-gateway approvals`` or the admin API); the agent repeats the exact call with the
``approval_id`` argument, which the gateway consumes once, atomically, before the call runs.

    model.py     the approval, the argument hash that binds it to one call, the errors (pure)
    settings.py  ``approvals:`` in gateway.yaml
    store.py     the ``ApprovalStore`` Protocol and its error
    sqlcore.py   the SQL statements and store logic both backends share (votes, single use)
    sql.py       SQLite (default, in the data directory) and PostgreSQL stores
    decide.py    one audited decision by an authenticated admin (the CLI and the admin API share it)
    notify.py    the Slack-compatible webhook that tells approvers a request is waiting
    gate.py      the call path's gate over the store and the notifier
"""
