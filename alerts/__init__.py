"""Alerts: judge readings against standards profiles and the device's own history."""
