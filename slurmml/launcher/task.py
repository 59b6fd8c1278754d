"""What runs inside each job: compose one sweep point's config and run the Hydra task.

On Slurm, submitit unpickles a SweepTask and calls it with the task's index; on the
local backend, `python -m slurmml.launcher.task BATCH_DIR INDEX` does the same.
A task that raises exits non-zero with its traceback on stderr, so Slurm records FAILED.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slurmml.launcher import batch


def job_id_from_environment(default: str) -> str:
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID", default)


def run_task(batch_dir: Path, index: int) -> Any:
    payload = batch.load_payload(batch_dir)
    for entry in reversed(payload.import_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)

    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals
    from omegaconf import open_dict

    Singleton.set_state(payload.singleton_state)
    setup_globals()
    job_num = payload.initial_job_idx + index
    config = payload.hydra_context.config_loader.load_sweep_config(payload.config, list(payload.overrides[index]))
    with open_dict(config.hydra.job) as job:
        job.id = job_id_from_environment(default=f"local_{job_num}")
        job.num = job_num
    result = run_job(
        hydra_context=payload.hydra_context,
        task_function=payload.task_function,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    if os.environ.get("SLURM_PROCID", "0") == "0":  # one writer per result file
        batch.write_result(batch_dir, index, result)
    if result.status == JobStatus.FAILED:
        raise result._return_value  # Python prints the traceback to stderr and exits non-zero
    return result


@dataclass(frozen=True)
class SweepTask:
    """The callable submitit pickles for each array task: small, the heavy payload is shared."""

    batch_dir: str

    def __call__(self, index: int) -> Any:
        return run_task(Path(self.batch_dir), index)

    def checkpoint(self, index: int) -> Any:
        """On timeout or preemption submitit asks for this: resubmit the same sweep point."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, index)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m slurmml.launcher.task BATCH_DIR INDEX", file=sys.stderr)
        return 2
    run_task(Path(argv[0]), int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
