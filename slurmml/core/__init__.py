"""The pure core: vocabulary (run states, metric direction) and rendering rules; no I/O, no Slurm, no SQLite."""
