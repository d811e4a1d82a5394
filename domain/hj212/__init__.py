"""HJ 212-2017 / HJ 212-2025, the wire both ends speak: the codec (sans-I/O) and the code map.
Ingest's TCP gateway (ingest/hj212/) decodes with it; the simulated data loggers encode."""
