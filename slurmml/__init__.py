"""slurmml: launch, track, watch and report Hydra sweeps on Slurm GPU clusters.

Importing this package must stay cheap: it runs inside every job and on every
``slurmml`` command, so heavy modules are imported where they are used.
"""

__version__ = "0.1.0"

_TRACKING = {"log", "log_params", "log_artifact", "run"}
_CHECKPOINTS = {"save_checkpoint", "load_checkpoint"}
_DISTRIBUTED = {"init_distributed"}
_REQUEUE = {"checkpoint_point", "stop_requested", "requeue_after_save", "Requeued"}
_DATA = {"dataset"}
_CONTROLS = {"on_set", "Stopped"}


def __getattr__(name: str):
    """`slurmml.log(...)`, `slurmml.save_checkpoint(...)` and friends: the in-job API, imported on first use."""
    if name in _TRACKING:
        from slurmml.tracking import client as module
    elif name in _CHECKPOINTS:
        from slurmml.tracking import checkpoint as module
    elif name in _DISTRIBUTED:
        from slurmml.tracking import distributed as module
    elif name in _REQUEUE:
        from slurmml.tracking import requeue as module
    elif name in _DATA:
        from slurmml.tracking import datasets as module
    elif name in _CONTROLS:
        from slurmml.tracking import controls as module
    else:
        raise AttributeError(f"module 'slurmml' has no attribute {name!r}")
    value = globals()[name] = getattr(module, name)  # later lookups skip this function
    return value
