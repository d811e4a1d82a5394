"""Shared vocabulary of Landun: parameters, sites, devices, readings, alerts. No I/O beyond
reading the package's own data files."""
