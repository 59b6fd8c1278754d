"""The pure core: the vocabulary (run states, metric direction), the poller's decisions, table layout and
text rules. Data in, data out: no SQLite, no subprocess, no terminal, no Slurm (tests/unit/test_layers.py)."""
