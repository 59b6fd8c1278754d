"""Submit a staged batch to Slurm: submitit renders each job array's script, one sbatch call queues it.

Every array task runs `python -m slurmml.launcher.task BATCH_DIR --offset N` (task.task_arguments): no
per-task pickle, and the task finds its sweep point from SLURM_ARRAY_TASK_ID.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional

from slurmml.errors import SlurmmlError
from slurmml.launcher import batch
from slurmml.launcher.config import SlurmQueueConf
from slurmml.launcher.plan import (ArrayChunk, Template, job_environment, log_folder, submitit_parameters,
                                   torchrun_command, warning_lead_s)
from slurmml.launcher.task import TASK_MODULE, task_arguments
from slurmml.slurm.commands import available, run_command
from slurmml.tracking.requeue import MAX_NUM_TIMEOUT_ENV, SIGNAL_DELAY_ENV
from slurmml.slurm.parse import parse_job_id, sbatch_error_line


@dataclass(frozen=True)
class ArraySubmission:
    job_id: str
    offset: int
    count: int
    script: str  # path of the saved sbatch script
    log_dir: str

    def task_job_id(self, index_in_batch: int) -> str:
        local = index_in_batch - self.offset
        return f"{self.job_id}_{local}" if self.count > 1 else self.job_id

    def log_file(self, index_in_batch: int) -> str:
        """The stderr file of the task's first Slurm task."""
        return f"{self.log_dir}/{self.task_job_id(index_in_batch)}_0_log.err"


@dataclass(frozen=True)
class ScriptMaker:
    """Renders sbatch scripts with submitit, from parameters it has checked and converted once."""

    parameters: dict[str, Any]
    log_dir: Path
    use_srun: bool
    python: str  # a shell command line, used as written (submitit's `python`)
    nproc_per_node: Optional[int] = None  # torchrun mode
    lead_s: int = 120  # the warning signal's lead (plan.warning_lead_s)
    max_num_timeout: int = 0
    task_module: str = TASK_MODULE  # the wrapper each task runs (task.task_arguments)

    def command(self, batch_dir: Path, offset: int) -> str:
        arguments = task_arguments(batch_dir, offset=offset, module=self.task_module)
        if self.nproc_per_node:
            return torchrun_command(self.python, arguments, self.nproc_per_node, self.lead_s)
        command = f"{self.python} " + shlex.join(arguments)
        return command if self.use_srun else f"exec {command}"  # exec: the task itself gets the batch signal

    def render(self, batch_dir: Path, chunk: ArrayChunk) -> str:
        from submitit.slurm.slurm import _make_sbatch_string

        # what the job's warning handler reads (tracking/requeue.py), in the script: a resubmission with other
        # launcher settings gets them too
        requeue = [f"export {MAX_NUM_TIMEOUT_ENV}={int(self.max_num_timeout)}", f"export {SIGNAL_DELAY_ENV}={int(self.lead_s)}"]
        params = {**self.parameters, "use_srun": self.use_srun, "setup": [*self.parameters.get("setup", []), *requeue]}
        if chunk.count > 1:
            params["map_count"] = chunk.count
        return _make_sbatch_string(command=self.command(batch_dir, chunk.offset), folder=self.log_dir, **params)


def check_known_fields(conf: Mapping[str, Any]) -> None:
    unknown = sorted(set(conf) - {f.name for f in fields(SlurmQueueConf)})  # added with `+hydra.launcher.x=...`
    if unknown:
        raise SlurmmlError(f"hydra.launcher.{unknown[0]} is not a launcher field "
                           "(other sbatch options go in hydra.launcher.additional_parameters)")


def script_maker(conf: Mapping[str, Any], template: Template) -> ScriptMaker:
    import submitit

    log_dir = str(Path(log_folder(conf["submitit_folder"])).absolute())  # recorded for readers elsewhere
    check_known_fields(conf)
    if not available("srun"):  # submitit's Slurm executor refuses to exist without it, with a traceback
        raise SlurmmlError("srun not found on PATH: sbatch scripts are rendered (also for a dry run) on a machine "
                           "with Slurm's commands (run the sweep here with hydra/launcher=slurmml_local)")
    executor = submitit.AutoExecutor(folder=log_dir, cluster="slurm")
    try:
        executor.update_parameters(**submitit_parameters(conf, template))  # checks names, converts units
    except (NameError, ValueError) as error:
        raise SlurmmlError(f"hydra.launcher: {str(error).splitlines()[0]}") from None
    parameters = dict(executor._executor.parameters)
    use_srun = conf.get("use_srun")
    if use_srun is None or conf.get("nproc_per_node"):  # torchrun runs as each node's job step
        use_srun = bool(conf.get("nproc_per_node")) or (conf.get("nodes") or 1) * (conf.get("tasks_per_node") or 1) > 1
    if not use_srun:  # no job step to signal: send the warning signal to the batch script, which is the task
        parameters["additional_parameters"] = {
            **parameters.get("additional_parameters", {}),
            "signal": f"B:USR2@{warning_lead_s(conf)}",
        }
    return ScriptMaker(parameters, Path(log_dir), use_srun, conf.get("python") or shlex.quote(sys.executable),
                       conf.get("nproc_per_node"), warning_lead_s(conf), int(conf.get("max_num_timeout") or 0))


def recorded_script_maker(conf: Mapping[str, Any]) -> ScriptMaker:
    """A sweep's ScriptMaker rebuilt from its staged launcher config (clones, resubmissions)."""
    import json

    from slurmml.launcher.templates import load_template
    from slurmml.tracking.secrets import MASK

    if not available("sbatch"):
        raise SlurmmlError("sbatch not found on PATH: this machine cannot submit to Slurm")
    if MASK in json.dumps(dict(conf), default=str):  # recorded masked: the script would carry the mask, not the value
        raise SlurmmlError("the sweep's recorded launcher config has masked (secret-looking) values, so its sbatch "
                           "script cannot be rebuilt; launch the run again instead")
    return script_maker(conf, load_template(conf.get("template")))


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        run_command(["scancel", *job_ids])


SBATCH_TIMEOUT_S = 120.0


class SbatchNoAnswer(SlurmmlError):
    """sbatch did not answer in time: the job may be queued all the same, so nothing it reads may be taken back.
    `submitted`: the arrays queued before it."""

    def __init__(self, message: str, submitted: list[ArraySubmission]) -> None:
        super().__init__(message)
        self.submitted = submitted


def submit_arrays(maker: ScriptMaker, batch_dir: Path, chunks: list[ArrayChunk]) -> list[ArraySubmission]:
    """One sbatch per chunk; if sbatch refuses one, cancel the ones already queued: nothing half-submitted.
    If sbatch does not answer, its job may be queued: SbatchNoAnswer, and nothing is cancelled."""
    maker.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # Slurm does not create log folders
    env = job_environment(os.environ)  # a sweep submitted from inside a job must not inherit its SLURM_* settings
    submitted: list[ArraySubmission] = []
    for number, chunk in enumerate(chunks):
        script = batch_dir / f"array_{number}.sbatch"
        batch.write_atomic(script, maker.render(batch_dir, chunk).encode())
        result = run_command(["sbatch", "--parsable", str(script)], env=env, timeout_s=SBATCH_TIMEOUT_S)
        where = f" (array {number + 1} of {len(chunks)})" if len(chunks) > 1 else ""
        if result.timed_out:
            raise SbatchNoAnswer(f"sbatch did not answer within {SBATCH_TIMEOUT_S:g} s{where}", submitted)
        if not result.ok:
            cancel([s.job_id for s in submitted])
            undone = f"; cancelled the {len(submitted)} array(s) already queued" if submitted else ""
            raise SlurmmlError(f"sbatch refused the job{where}: {sbatch_error_line(result.stderr)}{undone}")
        submitted.append(ArraySubmission(parse_job_id(result.stdout), chunk.offset, chunk.count, str(script),
                                         str(maker.log_dir)))
    return submitted
