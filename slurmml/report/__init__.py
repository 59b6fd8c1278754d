"""Efficiency, GPU-hours and failure reports over the registry and sacct's records."""
