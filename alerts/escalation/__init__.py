"""Escalation: who is told about an alert, and who next while nobody acknowledges it."""
