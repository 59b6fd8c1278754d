"""How far a sweep has got: run counts by state and the best metric so far, and following that until every
run has ended.

Slurm is asked only through the shared poller (slurmml.poller.loop), whose schedule lives in the registry:
however many watchers and TUIs follow the same registry, squeue runs once per interval in all.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

TICK_S = 1.0  # how often a follower reads the registry (no Slurm call)


class Snapshot:
    """Where a sweep stands: run counts by state and the best metric value so far."""

    def __init__(self, states: dict[str, int], metric: Optional[str], best: Optional[dict]) -> None:
        from slurmml.core.states import NOT_STARTED_STATES, STOPPED_STATES, SUCCESS_STATE, is_failed

        self.states = states
        self.total = sum(states.values())
        self.queued = sum(states.get(s, 0) for s in NOT_STARTED_STATES)
        self.running = states.get("RUNNING", 0)
        self.done = states.get(SUCCESS_STATE, 0)
        self.failed = sum(n for s, n in states.items() if is_failed(s))
        self.stopped = sum(states.get(s, 0) for s in STOPPED_STATES)  # ended on request or by early stopping
        self.finished = self.done + self.failed + self.stopped
        self.metric, self.best = metric, best

    @property
    def all_final(self) -> bool:
        return self.finished == self.total

    def line(self) -> str:
        text = f"queued {self.queued}  running {self.running}  done {self.done}  failed {self.failed}"
        if self.stopped:
            text += f"  stopped {self.stopped}"
        if self.best is not None:
            text += f"  best {self.metric} {self.best['value']:.6g} (#{self.best['job_num']})"
        return text


def snapshot(registry: Any, ids: list[str], metric: Optional[str] = None, mode: Optional[str] = None) -> Snapshot:
    """Counts by state, and the best run so far (never a failed one) by `metric`, by default the one
    slurmml.core.direction.default_metric picks; best as slurmml.core.direction says."""
    from slurmml.core.direction import default_metric, metric_mode, shared_direction
    from slurmml.registry.sweep_reads import any_result, logged_metrics, state_counts

    states = state_counts(registry.conn, ids)
    declared = shared_direction(registry.sweep_direction(sweep) for sweep in ids)
    if metric is None:
        metric = default_metric(logged_metrics(registry.conn, ids), any_result(registry.conn, ids), declared)
    best = None
    if metric is not None:
        mode = metric_mode(metric, declared, mode)
        candidates = [row for sweep in ids for row in registry.best(metric, mode, sweep=sweep, limit=1)
                      if row["value"] is not None and row["value"] == row["value"]]  # not NaN
        if candidates:
            best = (max if mode == "max" else min)(candidates, key=lambda row: row["value"])
    return Snapshot(states, metric, best)


def follow(registry: Any, ids: list[str], poller: Any, metric: Optional[str] = None, mode: Optional[str] = None,
           on_update: Optional[Callable[[Snapshot, Any], None]] = None, sleep: Optional[Callable[[float], None]] = None,
           tick_s: float = TICK_S) -> Snapshot:
    """Ingest, poll (only as often as the shared schedule allows) and take a snapshot, until every run is final."""
    import time

    from slurmml.registry.jobs import slurm_run_ids

    sleep = sleep or time.sleep
    shown = slurm_run_ids(registry, ids)  # their sacct records are fetched too, however old
    while True:
        for sweep in ids:
            registry.ingest(sweep)
        report = poller.poll(wanted=shown)
        current = snapshot(registry, ids, metric, mode)
        if on_update is not None:
            on_update(current, report)
        if current.all_final:
            return current
        sleep(tick_s)
