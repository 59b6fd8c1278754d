"""`slurmml resubmit SWEEP`: run a sweep's tasks that ended badly again, as new executions of the same runs.

Each batch of the sweep that has such runs gets one new job array over exactly their task indexes
(`--array=3,7,9`), from the batch's staged payload (the code and config the sweep was launched with), with
its recorded launcher settings plus the changes given (`mem_gb=16` for the OOM ones). The runs keep their
ids, spools and folders: the next start is their next execution, and a task that resumes from its own
checkpoints (slurmml.load_checkpoint) goes on where it was.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from slurmml.core.states import FAILED_STATES, STOPPED_STATES
from slurmml.errors import SlurmmlError
from slurmml.launcher import batch

DEFAULT_STATES = ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "LOST")
NOT_CHANGEABLE = {"submitit_folder", "template", "python", "dry_run", "wait"}  # they would not run the same code


@dataclass
class BatchResubmission:
    """The runs of one batch to submit again: run id -> task index in the batch."""

    batch_dir: Path
    tasks: dict[str, int] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)  # run id -> the state it ended in
    job_id: Optional[str] = None
    script: Optional[str] = None

    def array(self, parallelism: Optional[int] = None) -> str:
        return array_spec(self.tasks.values(), parallelism)


# -- pure --------------------------------------------------------------------------------------------------

def array_spec(indexes: Iterable[int], parallelism: Optional[int] = None) -> str:
    """`--array=` for these task indexes: runs of consecutive ones as ranges (`0-2,7,9-10`), `%N` throttled."""
    ordered = sorted(set(indexes))
    parts, start = [], None
    for position, index in enumerate(ordered):
        if start is None:
            start = index
        if position + 1 == len(ordered) or ordered[position + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    spec = ",".join(parts)
    return f"{spec}%{parallelism}" if parallelism and parallelism < len(ordered) else spec


def choose_states(states: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(s.strip().upper() for s in states if s.strip())) or DEFAULT_STATES
    unknown = [s for s in chosen if s not in FAILED_STATES + STOPPED_STATES]  # a stopped run may go on too
    if unknown:
        raise SlurmmlError(f"--state {unknown[0]}: not a state a run can be resubmitted from ({', '.join(FAILED_STATES + STOPPED_STATES)})")
    return chosen


def plan(runs: Iterable[Mapping[str, Any]], states: Iterable[str]) -> list[BatchResubmission]:
    """The runs in `states`, by batch (their spool is `<batch dir>/spool/<index>.jsonl`)."""
    wanted = set(states)
    batches: dict[Path, BatchResubmission] = {}
    for run in runs:
        if run["state"] not in wanted or not run.get("spool_path"):
            continue
        spool = Path(run["spool_path"])
        target = batches.setdefault(spool.parent.parent, BatchResubmission(spool.parent.parent))
        target.tasks[run["id"]] = int(spool.stem)
        target.states[run["id"]] = run["state"]
    return sorted(batches.values(), key=lambda b: _first_job_num(b.batch_dir))


def _first_job_num(batch_dir: Path) -> int:
    """`batch_<initial job number>` (batch.batch_dir_for): batches in launch order."""
    number = batch_dir.name.rpartition("_")[2]
    return int(number) if number.isdigit() else 0


def parse_changes(changes: Iterable[str]) -> dict[str, Any]:
    """`mem_gb=16 timeout_min=120` (with or without `hydra.launcher.`) as launcher fields, values read as YAML."""
    import yaml

    parsed: dict[str, Any] = {}
    for change in changes:
        name, sep, value = change.partition("=")
        name = re.sub(r"^\+*hydra\.launcher\.", "", name.strip())
        if not sep or not name:
            raise SlurmmlError(f"{change}: give launcher changes as FIELD=VALUE, e.g. mem_gb=16")
        if name in NOT_CHANGEABLE:
            raise SlurmmlError(f"{name}: a resubmission runs the sweep's own code and folders; {name} cannot change")
        try:
            parsed[name] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise SlurmmlError(f"{change}: the value is not valid YAML") from None
    return parsed


def retarget_array(script: str, spec: str) -> str:
    """submitit's rendered script with its `#SBATCH --array=0-N%P` line for exactly these tasks."""
    rendered, count = re.subn(r"(?m)^#SBATCH --array=.*$", f"#SBATCH --array={spec}", script)
    if count != 1:
        raise SlurmmlError("the rendered sbatch script has no --array line to point at the tasks")
    return rendered


# -- side effects ------------------------------------------------------------------------------------------

def resubmit(registry: Any, sweep: str, states: Iterable[str] = (), changes: Iterable[str] = (),
             dry_run: bool = False) -> list[BatchResubmission]:
    from slurmml.launcher.clone import working_dir
    from slurmml.launcher.plan import ArrayChunk, check_fields
    from slurmml.launcher.slurm_backend import check_known_fields, recorded_script_maker
    from slurmml.launcher.sweep_lookup import one_sweep_id
    from slurmml.registry.sweep_reads import run_spools, sweep_launch

    sweep_id = one_sweep_id(registry, sweep)
    info = sweep_launch(registry.conn, sweep_id)
    if info.get("backend") != "slurm":
        raise SlurmmlError(f"sweep {sweep_id} ran on this machine (slurmml_local): there is no Slurm job to resubmit")
    if info.get("user") and info["user"] != getpass.getuser():
        raise SlurmmlError(f"sweep {sweep_id} belongs to {info['user']}: only its owner can resubmit it")
    chosen = choose_states(states)
    todo = plan(run_spools(registry.conn, sweep_id), chosen)
    if not todo:
        raise SlurmmlError(f"sweep {sweep_id} has no runs in {', '.join(chosen)}: nothing to resubmit")
    updates = parse_changes(changes)
    with working_dir(Path(info.get("cwd") or info.get("sweep_dir") or ".")):
        makers = []  # every batch's script can be built before anything is submitted
        for target in todo:
            payload = batch.load_staged_payload(target.batch_dir, batch.import_path(info.get("argv"), info.get("cwd")),
                                                f"{target.batch_dir.name}'s", "its runs cannot run again")
            conf = {**(payload.launcher or {}), **updates}
            check_known_fields(conf)
            check_fields(conf)
            makers.append(recorded_script_maker(conf))
        if dry_run:
            return todo
        for target, maker in zip(todo, makers):
            # rendered as an array of at least two (submitit writes no --array line for one), then pointed
            # at exactly these tasks
            try:
                _submit(registry, target, maker, ArrayChunk(0, max(2, max(target.tasks.values()) + 1)))
            except SlurmmlError as error:
                done = [f"{t.batch_dir.name} as job {t.job_id}" for t in todo if t.job_id]
                raise SlurmmlError(f"resubmitted {', '.join(done)}; then {error}" if done else str(error)) from None
    return todo


def _submit(registry: Any, target: BatchResubmission, maker: Any, chunk: Any) -> None:
    from slurmml.launcher.slurm_backend import SBATCH_TIMEOUT_S, ArraySubmission
    from slurmml.tracking.requeue import counts_path
    from slurmml.launcher.plan import job_environment
    from slurmml.launcher.recording import spool_path
    from slurmml.slurm.commands import run_command
    from slurmml.slurm.parse import parse_job_id, sbatch_error_line

    number = len(list(target.batch_dir.glob("resubmit_*.sbatch")))
    script = target.batch_dir / f"resubmit_{number}.sbatch"
    spec = target.array(maker.parameters.get("array_parallelism"))
    batch.write_atomic(script, retarget_array(maker.render(target.batch_dir, chunk), spec).encode())
    old_jobs = registry.claim_for_resubmission(target.states)  # two resubmissions at once never both submit
    result = run_command(["sbatch", "--parsable", str(script)], env=job_environment(os.environ),
                         timeout_s=SBATCH_TIMEOUT_S)
    if result.timed_out:  # the job may be queued all the same: keep the claim and the script
        raise SlurmmlError(f"sbatch did not answer within {SBATCH_TIMEOUT_S:g} s for {target.batch_dir.name}; "
                           f"its runs stay SUBMITTING: check `squeue --me`")
    if not result.ok:
        registry.release_resubmission(target.states, old_jobs)
        script.unlink(missing_ok=True)
        raise SlurmmlError(f"sbatch refused the resubmission of {target.batch_dir.name}: "
                           f"{sbatch_error_line(result.stderr)}")
    target.job_id, target.script = parse_job_id(result.stdout), str(script)
    for index in target.tasks.values():  # a new job: max_num_timeout counts from 0 again
        counts_path(spool_path(target.batch_dir, index)).unlink(missing_ok=True)
    submitted = ArraySubmission(target.job_id, chunk.offset, chunk.count, str(script), str(maker.log_dir))
    registry.mark_resubmitted({run_id: (submitted.task_job_id(index), submitted.log_file(index))
                               for run_id, index in target.tasks.items()})
