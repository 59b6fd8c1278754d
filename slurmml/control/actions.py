"""What a person can do to a run, for the TUI and the CLI: cancel it, requeue it, clone it with a change.

Each action is checked first by `refusal` (pure), then makes one Slurm call through `run_command`, then
records what changed, so the shared poller follows the run from there. Actions return an ActionResult
whose one-line message is shown to the user as it is: front ends never see a traceback. Cloning
unpickles the sweep's code, so `clone_run` runs it in a subprocess (slurmml.launcher.clone), never in the
caller. Kept light: no Hydra, no cloudpickle, no Rich here.
"""

from __future__ import annotations

import getpass
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from slurmml.errors import SlurmmlError
from slurmml.core.states import FINAL_STATES, NOT_STARTED_STATES
from slurmml.core.text import tool_error_lines
from slurmml.slurm.commands import CommandResult, run_command

ACTIONS = ("cancel", "requeue", "clone")
CLONE_TIMEOUT_S = 300.0  # unpickling, composing the config and sbatch (120 s at most) in the subprocess
# what scontrol/scancel say about a job slurmctld has forgotten (MinJobAge after it ended) or never had
UNKNOWN_JOB = "invalid job id specified"
ALREADY_ENDED = "already completing or completed"


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    message: str  # one line, shown to the user as is
    new_run_id: Optional[str] = None  # clone only

    def to_json_line(self) -> str:
        """How the clone subprocess sends its result back: one JSON object of these fields, on one line."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json_line(cls, line: str) -> Optional["ActionResult"]:
        """The result `to_json_line` wrote, or None if `line` is not one."""
        try:
            fields = json.loads(line)
            return cls(bool(fields["ok"]), str(fields["message"]), fields.get("new_run_id"))
        except (ValueError, TypeError, KeyError):
            return None


def _plain_script(run: dict) -> bool:
    """A run that `slurmml.log` started in a plain script: recorded without a sweep (a row without the
    sweep_id key says nothing either way)."""
    return "sweep_id" in run and run["sweep_id"] is None


def _is_local(run: dict) -> bool:
    """A run of a local sweep, or of a plain script: it never had a Slurm job."""
    return run.get("backend") == "local" or _plain_script(run)


def refusal(action: str, run: dict, owner: Optional[str], me: str) -> Optional[str]:
    """Why `action` may not act on `run`, or None. Pure: the TUI calls it to tell what cannot be done.

    `run` is a registry row: id, state and slurm_job_id, and when known sweep_id, spool_path and backend
    (Registry.run_with_sweep has them all), which give more precise reasons.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    run_id, state, job_id = run.get("id"), run.get("state"), run.get("slurm_job_id")
    if owner is not None and owner != me:
        return f"run {run_id} belongs to {owner}; slurmml acts only on your own runs"
    if action == "clone":
        if (_plain_script(run) and not run.get("synced")) or ("spool_path" in run and not run["spool_path"]):
            return (f"run {run_id} was not launched by slurmml (a plain script's run): "
                    f"there is no sweep to clone it from")
        return None
    if action == "cancel" and state in FINAL_STATES:
        return f"run {run_id} has already ended ({state}); nothing to cancel"
    if not job_id:
        if _is_local(run):
            instead = "stop its process instead" if action == "cancel" else "clone it instead"
            return (f"run {run_id} was launched on this machine, not on Slurm: "
                    f"there is no Slurm job to {action}; {instead}")
        if state == "SUBMITTING":
            return f"run {run_id} has no Slurm job id yet (sbatch has not answered); nothing to {action}"
        return f"run {run_id} has no Slurm job id; nothing to {action}"
    if action == "requeue" and state in NOT_STARTED_STATES:
        return f"run {run_id} is still queued (Slurm job {job_id}); nothing to requeue"
    return None


def _target(registry: Any, action: str, run_id: str, me: Optional[str]) -> tuple[Optional[dict], Optional[str]]:
    """The run, read after ingesting its spool (its state must be current), and why not to act on it."""
    try:
        registry.ingest_one(run_id)
        run = registry.run_with_sweep(run_id)
    except SlurmmlError as error:
        return None, str(error)
    return run, refusal(action, run, run["owner"], me or getpass.getuser())


# -- what Slurm said (pure; unit-tested on recorded stderr) ---------------------------------------------------

def error_lines(stderr: str) -> list[str]:
    """What the tool said went wrong (core.text.tool_error_lines), else every line it wrote."""
    return tool_error_lines(stderr) or [line.strip() for line in stderr.splitlines() if line.strip()]


def scancel_problem(stderr: str) -> Optional[str]:
    """Why `scancel --verbose` (which exits 0 either way) cancelled nothing, or None if it did."""
    for line in error_lines(stderr):
        match = re.search(r"Kill job error on job id \S+: (.*)", line)
        if match:
            return match.group(1).strip()
    return None


def scontrol_problem(stderr: str) -> str:
    """scontrol's complaint without the job id it repeats: `Invalid job id specified for job 5000`,
    `4971_28: Invalid job id specified` -> `Invalid job id specified`."""
    lines = error_lines(stderr)
    line = lines[0] if lines else "no message"
    line = re.sub(r"\s+for job \S+$", "", line)
    return re.sub(r"^\d+(_\d+)?:\s*", "", line)


def cancel_message(run_id: str, job_id: str, result: CommandResult) -> ActionResult:
    if not result.ok:
        return ActionResult(False, f"scancel refused Slurm job {job_id} of run {run_id}: "
                                   f"{scontrol_problem(result.stderr or result.stdout)}")
    problem = scancel_problem(result.stderr)
    if problem is None:
        return ActionResult(True, f"cancelled run {run_id} (Slurm job {job_id})")
    if ALREADY_ENDED in problem.lower():
        return ActionResult(False, f"run {run_id}: Slurm job {job_id} had already ended; nothing to cancel")
    if UNKNOWN_JOB in problem.lower():
        return ActionResult(False, f"run {run_id}: Slurm no longer knows job {job_id} (it ended a while ago); "
                                   f"nothing to cancel")
    return ActionResult(False, f"scancel did not cancel Slurm job {job_id} of run {run_id}: {problem}")


REQUEUE_HINTS = {  # scontrol's words (lower case) -> what the user can do
    "job is pending execution": "it has not started yet; nothing to requeue",
    "requested operation is presently disabled": "this job may not be requeued (submitted with --no-requeue, "
                                                 "or the cluster sets JobRequeue=0): clone the run instead",
}


def requeue_message(run_id: str, job_id: str, result: CommandResult) -> ActionResult:
    """What to tell the user after `scontrol requeue` (the registry is updated only when ok)."""
    if result.ok:
        # slurmctld holds a requeued job until the old execution's credential expires (EligibleTime = now + 121 s)
        return ActionResult(True, f"requeued run {run_id} (Slurm job {job_id}); Slurm holds a requeued job "
                                  f"about 2 minutes before it starts again")
    problem = scontrol_problem(result.stderr or result.stdout)
    if problem.lower().startswith(UNKNOWN_JOB):
        return ActionResult(False, f"Slurm no longer knows job {job_id} of run {run_id} (it forgets a job MinJobAge, "
                                   f"300 s by default, after it ends): clone the run instead (slurmml clone {run_id})")
    hint = REQUEUE_HINTS.get(problem.lower().rstrip("."))
    return ActionResult(False, f"scontrol refused to requeue Slurm job {job_id} of run {run_id}: {problem}"
                               f"{'; ' + hint if hint else ''}")


# -- the actions -------------------------------------------------------------------------------------------

def cancel_run(registry: Any, run_id: str, run: Callable[..., CommandResult] = run_command,
               me: Optional[str] = None) -> ActionResult:
    """`scancel` the run's job (or array task, `123_4`). The poller records CANCELLED from Slurm's word."""
    target, why = _target(registry, "cancel", run_id, me)
    if why or target is None:
        return ActionResult(False, why or f"no run {run_id!r}")
    job_id = target["slurm_job_id"]
    # --verbose: scancel exits 0 even for a job that has ended or is forgotten, and says so only when verbose
    return cancel_message(run_id, job_id, run(["scancel", "--verbose", job_id]))


def requeue_run(registry: Any, run_id: str, run: Callable[..., CommandResult] = run_command,
                me: Optional[str] = None) -> ActionResult:
    """`scontrol requeue` the run's job: it runs again under the same job id and spool (restarts + 1).

    Works on a running job (restarted) and on one that ended less than MinJobAge ago; the run is QUEUED
    again in the registry, so the shared poller follows it.
    """
    target, why = _target(registry, "requeue", run_id, me)
    if why or target is None:
        return ActionResult(False, why or f"no run {run_id!r}")
    job_id = target["slurm_job_id"]
    result = requeue_message(run_id, job_id, run(["scontrol", "requeue", job_id]))
    if result.ok:
        registry.mark_requeued(run_id, source="user")
    return result


def clone_command(registry_path: Any, run_id: str, overrides: list[str], python: str = sys.executable) -> list[str]:
    """The clone subprocess's command line: clone with exactly `overrides` (the front end merged them)."""
    return [python, "-m", "slurmml.launcher.clone", str(registry_path), run_id, *overrides]


def clone_outcome(result: CommandResult) -> ActionResult:
    """The clone subprocess's ActionResult: its last stdout line. Without one it crashed or was killed:
    its last stderr line says why."""
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    sent = ActionResult.from_json_line(lines[-1]) if lines else None
    if sent is not None:
        return sent
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else f"the clone exited with code {result.returncode} and said nothing"
    return ActionResult(False, re.sub(r"^slurmml:\s*", "", last))


def clone_run(registry_path: Any, run_id: str, overrides: list[str], python: str = sys.executable,
              run: Callable[..., CommandResult] = run_command) -> ActionResult:
    """Clone the run with these overrides (the whole list, as the user edited it), as a new run of its sweep.

    The sweep's code is unpickled in a `python -m slurmml.launcher.clone` subprocess, never in this process.
    """
    argv = clone_command(Path(registry_path), run_id, list(overrides), python)
    return clone_outcome(run(argv, timeout_s=CLONE_TIMEOUT_S))
