"""Simulated sites that publish realistic data with injected faults."""
