"""Persistence behind one interface: readings, dead letters, device state, alerts."""
