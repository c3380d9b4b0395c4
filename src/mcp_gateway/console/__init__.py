"""The security console: server-rendered pages for people (audit, chain health, approvals, ...)."""
