"""The one launch pipeline, for a sweep's batch and for a clone: record the runs, stage the payload, submit.

A sweep's batch comes from Hydra (slurmml.launcher.sweep); a clone is a one-run batch of its parent's
sweep, built from the parent's staged payload and new overrides (slurmml.launcher.clone). Either way the
runs are recorded (SUBMITTING) before anything is staged or submitted, sbatch's answers are recorded as
they come, and what the launch wrote is taken back when nothing was queued.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from slurmml.errors import SlurmmlError
from slurmml.launcher import batch
from slurmml.launcher.local_backend import local_log_paths
from slurmml.launcher.recording import forget_sweep, run_id, spool_path
from slurmml.launcher.slurm_backend import ArraySubmission, SbatchNoAnswer


@dataclass(frozen=True)
class BatchTarget:
    """Where one batch of runs goes, and what it runs: one override list per task."""

    sweep_id: str
    sweep_dir: Path
    initial_job_idx: int
    overrides: list[list[str]]
    parent_id: Optional[str] = None  # a clone's: the run it was cloned from

    @property
    def batch_dir(self) -> Path:
        return batch.batch_dir_for(self.sweep_dir, self.sweep_id, self.initial_job_idx)

    @property
    def run_ids(self) -> list[str]:
        return [run_id(self.sweep_id, self.initial_job_idx + index) for index in range(len(self.overrides))]

    def run_rows(self, backend: str) -> list[dict]:
        """The registry rows of its runs. A local task's log is known now; a Slurm task's once sbatch answers."""
        return [{"id": rid, "job_num": self.initial_job_idx + index, "overrides": list(overrides),
                 "parent_id": self.parent_id, "spool_path": str(spool_path(self.batch_dir, index)),
                 "log_path": str(local_log_paths(self.batch_dir, index)[1]) if backend == "local" else None}
                for index, (rid, overrides) in enumerate(zip(self.run_ids, self.overrides))]

    def manifest(self, backend: str, submissions: Sequence[ArraySubmission] = ()) -> dict[str, Any]:
        """The batch's batch.json: what was launched, and on Slurm as which jobs."""
        manifest: dict[str, Any] = {"sweep_id": self.sweep_id, "backend": backend,
                                    "initial_job_idx": self.initial_job_idx, "num_tasks": len(self.overrides)}
        if backend == "slurm":
            manifest["arrays"] = [asdict(s) for s in submissions]
        if self.parent_id:
            manifest["cloned_from"] = self.parent_id
        return manifest


def launch_batch(target: BatchTarget, payload: batch.Payload, backend: str, record: Callable[[list[dict]], Any],
                 submit: Callable[[Path], Any], created: Sequence[Path] = ()) -> tuple[Any, Any]:
    """Record the target's runs, stage the payload, submit it; the Registry they are in, and what `submit` said.

    `record(rows)` writes the rows to the registry and returns it. `submit(batch_dir)` queues the staged
    batch on Slurm and returns its ArraySubmissions (backend "slurm"), or starts it here, or does nothing
    (the caller runs the batch itself): its answer is returned as it is. If any step fails, nothing was
    queued: the runs are forgotten and the files this launch wrote (the batch folder, the folders in
    `created`, a sweep left without batches) are removed. If sbatch does not answer, its job may be
    queued and will read the staged batch: everything is kept.
    """
    registry = None
    try:
        registry = record(target.run_rows(backend))
        batch.stage(target.batch_dir, payload)
        submitted = submit(target.batch_dir)
    except SbatchNoAnswer as error:
        _mark_queued(registry, target, error.submitted)
        raise SlurmmlError(f"{error}: the job may have been queued all the same; "
                           f"check with `squeue --me` or `slurmml status {target.sweep_id}`") from None
    except Exception:
        _take_back(registry, target, list(created))
        raise
    if backend == "slurm":
        _mark_queued(registry, target, submitted)
    batch.write_manifest(target.batch_dir, target.manifest(backend, submitted if backend == "slurm" else ()))
    return registry, submitted


def _mark_queued(registry: Any, target: BatchTarget, submissions: Sequence[ArraySubmission]) -> None:
    run_ids = target.run_ids
    queued = {run_ids[i]: (sub.task_job_id(i), sub.log_file(i))
              for sub in submissions for i in range(sub.offset, sub.offset + sub.count)}
    if queued:
        registry.mark_queued(queued)


def _take_back(registry: Any, target: BatchTarget, created: list[Path]) -> None:
    """Undo what a launch that queued nothing wrote. `registry` is None when its runs were not recorded:
    then the batch folder is not this launch's (another clone may have taken the job number), and stays."""
    if registry is not None:
        registry.discard_runs(target.sweep_id, target.run_ids)
    ours = target.batch_dir if registry is not None else None
    if batch.unstage(target.sweep_dir, target.sweep_id, ours, created):
        forget_sweep(target.sweep_dir, target.sweep_id)
