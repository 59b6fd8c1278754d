"""slurmml: launch, track, watch and report Hydra sweeps on Slurm GPU clusters.

Importing this package must stay cheap: it runs inside every job and on every
``slurmml`` command, so heavy modules are imported where they are used.
"""

__version__ = "0.1.0"

_TRACKING = {"log", "log_params", "log_artifact", "run"}


def __getattr__(name: str):
    """`slurmml.log(...)` and friends: the in-job client, imported on first use."""
    if name in _TRACKING:
        from slurmml.tracking import client

        value = globals()[name] = getattr(client, name)  # later lookups skip this function
        return value
    raise AttributeError(f"module 'slurmml' has no attribute {name!r}")
