"""Run states: the one home of the vocabulary every command, report and screen counts with.

A run is ACTIVE until it reaches a FINAL state. Of the final states only COMPLETED is a success;
STOPPED (`slurmml stop`: saved, then ended on request) and PRUNED (stopped by the sweep's early-stopping rule)
are deliberate ends, neither success nor failure; every other end (FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY,
NODE_FAIL, PREEMPTED, LOST) counts as "failed" wherever a command shows a failed count, so `sweeps`,
`status`, `watch` and `report` agree.
"""

from __future__ import annotations

ACTIVE_STATES = ("SUBMITTING", "QUEUED", "RUNNING")
NOT_STARTED_STATES = ("SUBMITTING", "QUEUED")  # active, and no execution has started yet
SUCCESS_STATE = "COMPLETED"
STOPPED_STATES = ("STOPPED", "PRUNED")  # ended on request, cleanly: not failures
FINAL_STATES = ("COMPLETED", "STOPPED", "PRUNED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                "PREEMPTED", "LOST")
FAILED_STATES = tuple(state for state in FINAL_STATES if state != SUCCESS_STATE and state not in STOPPED_STATES)
ALL_STATES = ACTIVE_STATES + FINAL_STATES  # display order: live first, then how runs ended


def is_final(state: str) -> bool:
    return state in FINAL_STATES


def is_failed(state: str) -> bool:
    """Ended without completing."""
    return state in FAILED_STATES


def is_active(state: str) -> bool:
    return state not in FINAL_STATES


# -- Slurm's words (squeue, sacct) ---------------------------------------------------------------------------

SLURM_PENDING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"})
SLURM_RUNNING = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "SUSPENDED", "STOPPED",
                           "RESIZING"})
SLURM_FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                         "BOOT_FAIL", "DEADLINE", "REVOKED"})
# Slurm words with no run state of their own
SLURM_ALIASES = {"BOOT_FAIL": "NODE_FAIL", "DEADLINE": "TIMEOUT", "REVOKED": "CANCELLED"}


def run_state_of(slurm_state: str) -> str:
    """The run state a final Slurm word stands for (`DEADLINE` -> `TIMEOUT`)."""
    return SLURM_ALIASES.get(slurm_state, slurm_state)


def shown_slurm_state(run_state: str, slurm_state: str | None) -> str | None:
    """Slurm's state as a view may show it: an ended run never shows a live one.

    The cache keeps the last word squeue had for a job until sacct's final record replaces it; once the
    run has ended, that word (PENDING, RUNNING) is stale, so views show nothing until sacct has answered.
    """
    if slurm_state and is_final(run_state) and slurm_state not in SLURM_FINAL:
        return None
    return slurm_state or None


def state_path(history: list[dict]) -> str:
    """A run's state history in time order as one line, `QUEUED -> RUNNING -> COMPLETED`: a state that two
    sources reported (squeue saw the job start, the run recorded its start) is written once."""
    ordered = sorted(history, key=lambda entry: entry.get("time") or 0)  # stable: equal times keep their order
    path: list[str] = []
    for entry in ordered:
        if not path or path[-1] != entry["state"]:
            path.append(entry["state"])
    return " -> ".join(path)
