"""Why Slurm's warning signal came, and whether the job requeues itself: pure decisions for tracking/requeue.py.

The signal (USR2, `--signal=...USR2@signal_delay_s`) means one of three things, told apart by what Slurm says
about the job (`scontrol show job`), never by a clock rule:
- PREEMPTED: Slurm set the job's PreemptTime (a higher-tier job wants the nodes; GraceTime is running);
- TIMEOUT: no preemption, and the job's EndTime is about signal_delay_s away (its time limit nears);
- SIGNAL: neither (a person sent it: `scancel --signal=USR2 --batch JOB`).
Only TIMEOUT uses up max_num_timeout (hydra-submitit-launcher's field, same meaning): a job preempted ten
times was never too slow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Optional

TIMEOUT, PREEMPTED, SIGNAL = "TIMEOUT", "PREEMPTED", "SIGNAL"
# EndTime within signal_delay_s + this of now: the time limit. Slurm sends the signal up to a minute early
# (its timer ticks every 30-60 s), and a preemption's EndTime (now + GraceTime) never gets here: PreemptTime
# is checked first.
TIME_LIMIT_SLACK_S = 90
_NO_TIME = {"", "None", "Unknown", "N/A", "(null)"}


def scontrol_time(text: Optional[str]) -> Optional[float]:
    """`2026-12-02T03:40:00` (scontrol's local time) as a Unix time; None for None/Unknown."""
    if text is None or text.strip() in _NO_TIME:
        return None
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def why_warned(job: Mapping[str, str], now: float, signal_delay_s: float) -> str:
    """PREEMPTED, TIMEOUT or SIGNAL, from the job's `scontrol show job` fields at the time the signal came.
    Without Slurm's word (the call failed: empty `job`) it is a TIMEOUT: counting one too many is safe,
    requeueing forever is not."""
    if not job:
        return TIMEOUT
    if scontrol_time(job.get("PreemptTime")) is not None:
        return PREEMPTED
    end = scontrol_time(job.get("EndTime"))
    if end is None or end - now <= signal_delay_s + TIME_LIMIT_SLACK_S:
        return TIMEOUT
    return SIGNAL


def stop_at(reason: str, job: Mapping[str, str], warned_at: float, lead_s: float) -> float:
    """When the task stops to save and requeue. Slurm sends the time-limit warning at its first check (every
    30 s) past EndTime - lead - 30 s, so up to a minute before the lead asked for: the task trains on until
    EndTime - lead, the time the user said a save needs. A preemption's GraceTime is short, and a person's
    signal means now: at once."""
    end = scontrol_time(job.get("EndTime"))
    if reason != TIMEOUT or end is None:
        return warned_at
    return max(warned_at, end - lead_s)


@dataclass(frozen=True)
class Decision:
    requeue: bool
    message: str  # one line for the job's stderr


def decide(reason: str, timeouts_so_far: int, max_num_timeout: int, job_id: str) -> Decision:
    """Whether this job requeues itself for `reason`, given the time-limit requeues it already used."""
    if not job_id:
        return Decision(False, "slurmml: not a Slurm job: nothing to requeue")
    if reason == TIMEOUT:
        if timeouts_so_far >= max_num_timeout:
            return Decision(False, f"slurmml: time limit near; no requeue left (max_num_timeout={max_num_timeout}, "
                                   f"{timeouts_so_far} used)")
        return Decision(True, f"slurmml: time limit near; requeueing {job_id} "
                              f"(timeout requeue {timeouts_so_far + 1} of {max_num_timeout})")
    if reason == PREEMPTED:
        return Decision(True, f"slurmml: preempted; requeueing {job_id} (does not count against max_num_timeout)")
    return Decision(True, f"slurmml: warning signal from outside Slurm's schedule; requeueing {job_id}")


def watchdog_delay_s(signal_delay_s: float, cooperative: bool) -> float:
    """How long after the signal the job waits for a checkpoint point before it requeues without saving:
    at once for a task that never called one; else three quarters of the warning, so that the requeue
    still comes before Slurm's kill (and at least 5 s)."""
    return max(5.0, 0.75 * signal_delay_s) if cooperative else 0.0
