"""SIEM export: audit records streamed to syslog and HTTP collectors (OCSF or JSON lines)."""
