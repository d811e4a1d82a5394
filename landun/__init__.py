"""Configuration, command line, and the wiring that starts the stages together."""
