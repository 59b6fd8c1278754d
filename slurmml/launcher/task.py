"""What runs inside each job: compose one sweep point's config and run the Hydra task.

Slurm array tasks run `python -m slurmml.launcher.task BATCH_DIR --offset N`, the local
backend `python -m slurmml.launcher.task BATCH_DIR INDEX` (task_arguments writes both).
A task that raises exits non-zero with its traceback on stderr, so Slurm records FAILED.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Optional

from slurmml.core.job_env import job_id_from_environment
from slurmml.launcher import batch
from slurmml.tracking.distributed import export_torch_environment


TASK_MODULE = "slurmml.launcher.task"


def task_arguments(batch_dir: Path, *, index: Optional[int] = None, offset: Optional[int] = None,
                   module: str = TASK_MODULE) -> list[str]:
    """What follows `python` to start tasks of a staged batch, as index_from_arguments reads it back:
    task `index` (local runs), or the array task `offset` + SLURM_ARRAY_TASK_ID (Slurm). `module`: the task
    wrapper (this one for Hydra payloads; slurmml.launcher.script_task for a script run cloned from elsewhere)."""
    if (index is None) == (offset is None):
        raise ValueError("give index or offset")
    which = [str(index)] if offset is None else ["--offset", str(offset)]
    return ["-u", "-m", module, str(batch_dir), *which]


def compose_config(payload: batch.Payload, overrides: list[str]) -> Any:
    """The task's config for these overrides, composed from the staged Hydra context: what each task runs
    with, and how a clone checks its overrides before anything is recorded. Raises what Hydra raises."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import setup_globals

    batch.add_to_sys_path(payload.import_path)
    Singleton.set_state(payload.singleton_state)
    setup_globals()
    return payload.hydra_context.config_loader.load_sweep_config(payload.config, list(overrides))


def run_task(batch_dir: Path, index: int) -> Any:
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobStatus, run_job
    from omegaconf import open_dict

    from slurmml.tracking import client

    payload = batch.load_payload(batch_dir)
    job_num = payload.initial_job_idx + index
    overrides = list(payload.overrides[index])
    config = compose_config(payload, overrides)
    with open_dict(config.hydra.job) as job:
        job.id = job_id_from_environment(os.environ, default=f"local_{job_num}")
        job.num = job_num
    HydraConfig.instance().set_config(config)
    export_torch_environment(os.environ)  # each task of a multi-task step: its rank and the rendezvous
    writer_owner = client.rank() == 0  # one writer per spool and result file
    run_id, run_dir = _export_run(payload, index, config)  # every rank knows its run (checkpoints to load)
    sampler = (_start_tracking(payload, batch_dir, index, run_id, run_dir, config, overrides) if writer_owner
               else _sample_this_node(payload, batch_dir, index))
    try:
        result = run_job(
            hydra_context=payload.hydra_context,
            task_function=payload.task_function,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except SystemExit as exit:  # Requeued (exit code 0), or the task's own sys.exit: the run ends as the process
        if writer_owner:
            _end_tracking(sampler, None, exit)
        elif sampler is not None:
            sampler.stop_and_close()
        raise
    if writer_owner:
        _end_tracking(sampler, result)
        batch.write_result(batch_dir, index, result)
    elif sampler is not None:
        sampler.stop_and_close()
    if result.status == JobStatus.FAILED:
        raise result._return_value  # Python prints the traceback to stderr and exits non-zero
    return result


def _run_dir(config: Any) -> Path:
    from omegaconf import OmegaConf

    return (Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(OmegaConf.select(config, "hydra.sweep.subdir"))).absolute()


def _export_run(payload: batch.Payload, index: int, config: Any) -> tuple[str, Path]:
    """The run's id and folder, also in the environment, where the in-job client of every rank finds them."""
    from slurmml.launcher.recording import run_id
    from slurmml.tracking import client
    from slurmml.tracking.spool import RUN_ID_ENV

    ids = run_id(payload.sweep_id, payload.initial_job_idx + index), _run_dir(config)
    os.environ[RUN_ID_ENV], os.environ[client.RUN_DIR_ENV] = ids[0], str(ids[1])
    return ids


def _start_tracking(payload: batch.Payload, batch_dir: Path, index: int, run_id: str, run_dir: Path, config: Any,
                    overrides: list[str]) -> Any:
    """Open the run's spool (its only writer), record how it starts, and sample its GPUs."""
    from omegaconf import OmegaConf

    from slurmml.launcher.recording import node_spool_path, spool_path
    from slurmml.tracking import client
    from slurmml.tracking.gpu import GpuSampler
    from slurmml.tracking.spool import SPOOL_ENV

    task_config = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    try:
        resolved = OmegaConf.to_container(task_config, resolve=True)
    except Exception:  # an interpolation only the task can resolve: keep it as written
        resolved = OmegaConf.to_container(task_config, resolve=False)
    spool = spool_path(batch_dir, index)
    os.environ[SPOOL_ENV] = str(spool)
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES") or 1)
    client.start_run(spool, run_id, run_dir, resolved, overrides,
                     node_spools=[node_spool_path(batch_dir, index, node) for node in range(1, nodes)])
    return GpuSampler(client.current_writer(), interval_s=payload.gpu_sample_interval_s).start()


def _sample_this_node(payload: batch.Payload, batch_dir: Path, index: int) -> Any:
    """On each node but the first, its first task samples the node's GPUs into a file of its own (rank 0, on
    the first node, samples into the run's spool)."""
    from slurmml.launcher.recording import node_spool_path
    from slurmml.tracking.gpu import GpuSampler
    from slurmml.tracking.writer import SpoolWriter

    node = os.environ.get("SLURM_NODEID", "0").strip()
    if not node.isdigit() or node == "0" or os.environ.get("LOCAL_RANK", "0") != "0":
        return None
    writer = SpoolWriter(node_spool_path(batch_dir, index, int(node)))
    return GpuSampler(writer, interval_s=payload.gpu_sample_interval_s).start()


def _end_tracking(sampler: Any, result: Any, exit: Optional[SystemExit] = None) -> None:
    import traceback

    from hydra.core.utils import JobStatus

    from slurmml.tracking import client

    if sampler is not None:
        sampler.stop()
    if exit is not None:  # after a requeue record end_run writes nothing
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        client.end_run("COMPLETED" if code == 0 else "FAILED", code, None if code == 0 else f"sys.exit({exit.code!r})")
    elif result.status == JobStatus.COMPLETED:
        client.end_run("COMPLETED", 0, result=numeric_result(result.return_value))
    else:
        error = result._return_value
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        client.end_run("FAILED", 1, text)


def numeric_result(value: Any) -> Optional[float]:
    """A task's return value as the run's result: an int or a float, or a NumPy/PyTorch scalar (0-d, `.item()`).
    Anything else (bool, str, dict, list, a tensor of several values) is not a result: None."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an int too large for a float
        return None


def index_from_arguments(argv: list[str], environ: Mapping[str, str]) -> tuple[Path, int]:
    """`BATCH_DIR INDEX` (local runs) or `BATCH_DIR --offset N` (array task N + SLURM_ARRAY_TASK_ID)."""
    if len(argv) == 2:
        return Path(argv[0]), int(argv[1])
    if len(argv) == 3 and argv[1] == "--offset":
        return Path(argv[0]), int(argv[2]) + int(environ.get("SLURM_ARRAY_TASK_ID", "0"))
    raise SystemExit("usage: python -m slurmml.launcher.task BATCH_DIR (INDEX | --offset N)")


def export_requeue_settings(payload: batch.Payload, environ: MutableMapping[str, str]) -> None:
    """What every rank's warning handler reads (tracking/requeue.py): max_num_timeout and the warning's lead.
    A Slurm job's script exports them (a resubmission's may differ from the launch); a local task takes the
    launch's."""
    from slurmml.launcher.plan import warning_lead_s
    from slurmml.tracking.requeue import MAX_NUM_TIMEOUT_ENV, SIGNAL_DELAY_ENV

    environ.setdefault(MAX_NUM_TIMEOUT_ENV, str(payload.max_requeues))
    environ.setdefault(SIGNAL_DELAY_ENV, str(warning_lead_s(payload.launcher or {})))


def main(argv: list[str]) -> int:
    from slurmml.tracking import requeue

    from slurmml.launcher.recording import spool_path
    from slurmml.tracking import client
    from slurmml.tracking.spool import SPOOL_ENV

    requeue.install()  # first: Slurm's warning signal must never kill the task, even while it starts
    batch_dir, index = index_from_arguments(argv, os.environ)
    if client.rank() == 0:  # a warning before tracking starts must find the run's spool, not start a stray run
        os.environ[SPOOL_ENV] = str(spool_path(batch_dir, index))
    export_requeue_settings(batch.load_payload(batch_dir), os.environ)
    run_task(batch_dir, index)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
