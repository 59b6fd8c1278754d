"""Find a sweep on disk and say where each of its tasks stands (one sacct call, or squeue without accounting)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from slurmml.errors import SlurmmlError
from slurmml.home import slurmml_home
from slurmml.launcher import batch
from slurmml.launcher.slurm_backend import ArraySubmission
from slurmml.slurm.commands import CommandResult, run_command
from slurmml.slurm.parse import SACCT_STATE_FORMAT, SQUEUE_FORMAT, TaskState, parse_sacct_states, parse_squeue


@dataclass(frozen=True)
class TaskRow:
    job_num: int
    job_id: str
    state: str
    detail: str
    log: str


def resolve_sweep(sweep: str) -> list[Path]:
    """The state directories of a sweep id (recorded under $SLURMML_HOME/sweeps) or of every sweep in a directory."""
    path = Path(sweep).expanduser()
    if (path / ".slurmml").is_dir():
        found = [record.parent for record in (path / ".slurmml").glob(f"*/{batch.SWEEP_RECORD}")]
        if found:
            return sorted(found, key=lambda d: json.loads((d / batch.SWEEP_RECORD).read_text())["created"])
    record = slurmml_home() / "sweeps" / f"{sweep}.json"
    if record.is_file():
        state_dir = batch.sweep_state_dir(Path(json.loads(record.read_text())["dir"]), sweep)
        if state_dir.is_dir():
            return [state_dir]
        raise SlurmmlError(f"sweep {sweep} was in {state_dir.parent.parent}, which no longer holds it")
    raise SlurmmlError(f"no sweep '{sweep}': not a sweep directory, and no sweep with that id in {slurmml_home()}")


def _batch_dirs(state_dir: Path) -> list[Path]:
    dirs = [d for d in state_dir.glob("batch_*") if (d / batch.MANIFEST).is_file()]
    return sorted(dirs, key=lambda d: int(d.name.split("_")[1]))


def _slurm_states(array_ids: list[str], run: Callable[..., CommandResult]) -> tuple[dict[str, TaskState], str]:
    if not array_ids:
        return {}, ""
    jobs = f"--jobs={','.join(array_ids)}"
    sacct = run(["sacct", "--noheader", "--parsable2", "--allocations", f"--format={SACCT_STATE_FORMAT}", jobs])
    if sacct.ok and sacct.stdout.strip():
        return {t.job_id: t for t in parse_sacct_states(sacct.stdout)}, ""
    squeue = run(["squeue", "--noheader", "--array", jobs, f"--format={SQUEUE_FORMAT}"])
    states = {t.job_id: t for t in parse_squeue(squeue.stdout)} if squeue.ok else {}
    return states, "sacct knows none of these jobs (no accounting, or not recorded yet): ended tasks' states come from their result files"


def task_rows(state_dir: Path, run: Callable[..., CommandResult] = run_command) -> tuple[list[TaskRow], str]:
    manifests = [(d, batch.read_manifest(d) or {}) for d in _batch_dirs(state_dir)]
    array_ids = [a["job_id"] for _, m in manifests for a in m.get("arrays", [])]
    states, warning = _slurm_states(array_ids, run)
    rows = []
    for batch_dir, manifest in manifests:
        finished = batch.finished_indices(batch_dir)
        first = manifest.get("initial_job_idx", 0)
        arrays = manifest.get("arrays", [])
        for index in range(manifest.get("num_tasks", 0)):
            array = next((a for a in arrays if a["offset"] <= index < a["offset"] + a["count"]), None)
            if array is None:  # ran locally
                job_id, log = f"local_{first + index}", str(batch_dir / "logs" / f"{index}.err")
                state = TaskState(job_id, _outcome_from_result(batch_dir, index) if index in finished else "NOT FINISHED")
            else:
                submission = ArraySubmission(**array)
                job_id, log = submission.task_job_id(index), submission.log_file(index)
                state = states.get(job_id) or TaskState(
                    job_id, _outcome_from_result(batch_dir, index) if index in finished else "UNKNOWN"
                )
            rows.append(TaskRow(first + index, job_id, state.state, state.reason, log))
    return rows, warning


def _outcome_from_result(batch_dir: Path, index: int) -> str:
    """Without Slurm's word, a task's state is in its result (a Hydra JobReturn): COMPLETED or FAILED."""
    return batch.read_result(batch_dir, index).status.name


def counts(rows: list[TaskRow]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for row in rows:
        tally[row.state] = tally.get(row.state, 0) + 1
    return dict(sorted(tally.items()))


def sweep_record(state_dir: Path) -> dict:
    return json.loads((state_dir / batch.SWEEP_RECORD).read_text())


SLURM_FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
               "DEADLINE"}


def reconcile(registry: Any, sweep_id: str, rows: list[TaskRow]) -> None:
    """Runs Slurm says have ended but that never recorded their own end take Slurm's word (never RUNNING forever)."""
    registry.ingest(sweep_id)
    ended = {f"{sweep_id}-{row.job_num}": (row.state, f"Slurm: {row.state} {row.detail}; the run recorded no end")
             for row in rows if row.state in SLURM_FINAL}
    if ended:
        registry.mark_final(ended, source="sacct")
