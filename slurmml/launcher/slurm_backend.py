"""Submit a staged batch to Slurm through submitit: one sbatch call per job array."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from slurmml.errors import SlurmmlError
from slurmml.launcher import batch
from slurmml.launcher.plan import ArrayChunk, Template, inherited_job_variables, submitit_parameters
from slurmml.launcher.task import SweepTask
from slurmml.slurm.commands import run_command
from slurmml.slurm.parse import sbatch_error_line


@dataclass(frozen=True)
class ArraySubmission:
    job_id: str
    offset: int
    count: int
    script: str  # path of the saved sbatch script
    log_dir: str  # submitit folder pattern, %j is `<job_id>_<array index>`

    def task_job_id(self, index_in_batch: int) -> str:
        local = index_in_batch - self.offset
        return f"{self.job_id}_{local}" if self.count > 1 else self.job_id

    def log_file(self, index_in_batch: int) -> str:
        """submitit's stderr file of the task's first Slurm task."""
        job_id = self.task_job_id(index_in_batch)
        return f"{self.log_dir.replace('%j', job_id)}/{job_id}_0_log.err"


def make_executor(conf: Mapping[str, Any], template: Template) -> Any:
    import submitit

    executor = submitit.AutoExecutor(
        folder=conf["submitit_folder"], cluster="slurm", slurm_max_num_timeout=conf.get("max_num_timeout", 0)
    )
    executor.update_parameters(**submitit_parameters(conf, template))
    return executor


def render_script(executor: Any, chunk: ArrayChunk) -> str:
    """The exact text submitit writes for this array (used for dry runs and the saved copy)."""
    from submitit.slurm.slurm import _make_sbatch_string

    slurm = executor._executor
    params = dict(slurm.parameters)
    if chunk.count > 1:
        params["map_count"] = chunk.count
    return _make_sbatch_string(command=slurm._submitit_command_str, folder=slurm.folder, **params)


@contextlib.contextmanager
def without_inherited_job_variables() -> Iterator[None]:
    """A sweep submitted from inside a job must not inherit that job's SLURM_* settings."""
    saved = {name: os.environ.pop(name) for name in inherited_job_variables(list(os.environ))}
    try:
        yield
    finally:
        os.environ.update(saved)


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        run_command(["scancel", *job_ids])


def submit_arrays(
    executor: Any, batch_dir: Path, chunks: list[ArrayChunk], scripts: list[Path]
) -> list[ArraySubmission]:
    """Submit every chunk; if sbatch refuses one, cancel the ones already queued: nothing half-submitted."""
    submitted: list[ArraySubmission] = []
    task = SweepTask(str(batch_dir))
    with without_inherited_job_variables():
        for number, (chunk, script) in enumerate(zip(chunks, scripts), 1):
            captured = io.StringIO()
            try:
                with contextlib.redirect_stderr(captured):  # submitit echoes sbatch's stderr; we say it once
                    jobs = executor.map_array(task, list(range(chunk.offset, chunk.offset + chunk.count)))
            except Exception as error:
                cancel([s.job_id for s in submitted])
                undone = f"; cancelled the {len(submitted)} array(s) already queued" if submitted else ""
                where = f" (array {number} of {len(chunks)})" if len(chunks) > 1 else ""
                raise SlurmmlError(f"sbatch refused the job{where}: {sbatch_error_line(str(error))}{undone}") from None
            job_id = str(jobs[0].job_id).split("_")[0]
            submitted.append(
                ArraySubmission(job_id, chunk.offset, chunk.count, str(script), str(executor._executor.folder))
            )
    return submitted


def manifest(sweep_id: str, initial_job_idx: int, submissions: list[ArraySubmission], num_tasks: int) -> dict:
    return {
        "sweep_id": sweep_id,
        "backend": "slurm",
        "initial_job_idx": initial_job_idx,
        "num_tasks": num_tasks,
        "arrays": [asdict(s) for s in submissions],
    }


def save_scripts(batch_dir: Path, texts: list[str]) -> list[Path]:
    paths = []
    for number, text in enumerate(texts):
        path = batch_dir / f"array_{number}.sbatch"
        batch.write_atomic(path, text.encode())
        paths.append(path)
    return paths
