"""In-job tracking: what a running task records, written to its own spool file (never the registry)."""
