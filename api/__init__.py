"""HTTP API and dashboard for inspectors."""
