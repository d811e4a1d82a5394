"""Configuration, command line, and the wiring that starts the stages together."""

from landun import memory

memory.apply()  # first: it must come before numpy loads and before any thread starts
