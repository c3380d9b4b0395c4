"""Alerts: rules over the audit stream, delivered to a webhook and shown in the console."""
