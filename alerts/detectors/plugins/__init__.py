"""Plug-in single-series detectors: one module each, found by `alerts.detectors.registry`."""
