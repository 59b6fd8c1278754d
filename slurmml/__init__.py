"""slurmml: launch, track, watch and report Hydra sweeps on Slurm GPU clusters.

Importing this package must stay cheap: it runs inside every job and on every
``slurmml`` command, so heavy modules are imported where they are used.
"""

__version__ = "0.1.0"
