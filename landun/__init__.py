"""Configuration, command line, and the wiring that starts the stages together."""

import os

# Before anything imports numpy: numpy advises the kernel to back every array over 4 MiB with
# 2 MiB pages. The detector banks are such arrays, zero-filled and written a row at a time, so
# huge pages make them resident long before their rows fill: bench/ingest_throughput.py with
# 2,000 devices peaked at 424 MB with the advice and 247 MB without it. An explicit setting wins.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
