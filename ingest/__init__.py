"""Ingest: take messages from MQTT (and HJ 212 via the gateway), validate, store, hand to alerts."""
