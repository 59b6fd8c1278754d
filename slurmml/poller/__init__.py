"""The one poller that talks to Slurm (squeue, sacct) for every view of a registry."""
