"""Launcher config schemas.

Field names match hydra-submitit-launcher's queue configs, so switching a project
over is one line (`hydra/launcher=slurmml`); slurmml's own fields come last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

PLUGIN_MODULE = "hydra_plugins.slurmml_launcher.slurmml_launcher"


@dataclass
class EarlyStopConf:
    """The launcher's `early_stop` rule (slurmml.core.early_stop checks it; null: that rule's default)."""

    metric: Optional[str] = None
    mode: Optional[str] = None  # min or max; null: from the metric's name
    rule: Optional[str] = None  # hyperband (default), median, asha
    min_steps: Optional[int] = None
    eta: Optional[float] = None
    min_runs: Optional[int] = None
    grace_s: Optional[float] = None
    max_steps: Optional[int] = None


@dataclass
class BaseQueueConf:
    """Fields shared by the Slurm and the local launcher."""

    # where task logs go (<job id>_<array index>_0_log.out/.err); a `%j` component is dropped
    submitit_folder: str = "${hydra.sweep.dir}/.slurmml/logs"
    # maximum time for the job in minutes
    timeout_min: int = 60
    cpus_per_task: Optional[int] = None
    gpus_per_node: Optional[int] = None
    # null: no --ntasks-per-node (Slurm's default, one task per node)
    tasks_per_node: Optional[int] = 1
    # memory per node, in GB
    mem_gb: Optional[int] = None
    nodes: int = 1
    name: str = "${hydra.job.name}"
    stderr_to_stdout: bool = False
    # render and print what would run, run nothing
    dry_run: bool = False
    # seconds between GPU samples (utilization, memory, power, temperature) recorded for each run
    gpu_sample_interval_s: float = 5.0
    # dataset versions the tasks read (NAME@VERSION or NAME@ALIAS), materialized into the shared data cache before
    # anything is submitted: for compute nodes that cannot reach the object store (docs/data.md)
    datasets: Optional[List[str]] = None
    # prune runs that have clearly lost, e.g. {metric: val_loss, mode: min, rule: hyperband, min_steps: 2, eta: 3}
    # (docs/control.md): decided by whoever watches, graceful stop, then scancel; all null: no early stopping
    early_stop: EarlyStopConf = field(default_factory=lambda: EarlyStopConf())


@dataclass
class SlurmQueueConf(BaseQueueConf):
    _target_: str = f"{PLUGIN_MODULE}.SlurmmlLauncher"

    partition: Optional[str] = None
    qos: Optional[str] = None
    comment: Optional[str] = None
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    gres: Optional[str] = None
    cpus_per_gpu: Optional[int] = None
    gpus_per_task: Optional[int] = None
    mem_per_gpu: Optional[str] = None
    mem_per_cpu: Optional[str] = None
    account: Optional[str] = None
    # seconds between the warning signal (USR2) and the kill at the time limit
    signal_delay_s: int = 120
    # resubmissions allowed after a timeout (needs a task that can resume)
    max_num_timeout: int = 0
    # the command that starts Python in the job, e.g. "singularity exec img.sif python" (null: this interpreter)
    python: Optional[str] = None
    # any other sbatch option, e.g. {"mail-type": "END"}
    additional_parameters: Dict[str, Any] = field(default_factory=dict)
    # at most this many array tasks run at once (sbatch --array=...%N)
    array_parallelism: int = 256
    # shell lines run in the job before srun
    setup: Optional[List[str]] = None
    srun_args: Optional[List[str]] = None
    # run the task through srun; null: only when the job has several tasks (nodes x tasks_per_node > 1),
    # otherwise the batch script itself becomes the task (cheaper to start, gets the USR2 warning too)
    use_srun: Optional[bool] = None
    # torchrun mode: each node's one Slurm task runs `torchrun --nproc-per-node=N` (static rendezvous at the first
    # node); Slurm's warning signal reaches the workers, torchrun ignores it; leave tasks_per_node at 1
    nproc_per_node: Optional[int] = None

    # cap each job array at this many tasks (null: the cluster's MaxArraySize); bigger sweeps split
    max_array_size: Optional[int] = None
    # a template from sbatch_templates/ by name, or a path to one: site setup lines and #SBATCH options
    template: Optional[str] = "default"
    # false: return once the sweep is queued; true: block and return every job's result
    wait: bool = False
    # seconds between squeue calls while waiting (never below 5: the controller is shared)
    poll_interval_s: float = 10.0


@dataclass
class LocalQueueConf(BaseQueueConf):
    _target_: str = f"{PLUGIN_MODULE}.SlurmmlLocalLauncher"

    # tasks run at once; null means one per CPU core
    array_parallelism: Optional[int] = None


def register_configs() -> None:
    """Store the schemas; the YAML presets in hydra_conf/hydra/launcher extend them."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(group="hydra/launcher", name="slurmml_schema", node=SlurmQueueConf, provider="slurmml")
    store.store(group="hydra/launcher", name="slurmml_local_schema", node=LocalQueueConf, provider="slurmml")
