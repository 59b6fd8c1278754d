"""Pure: the rows read from the registry (runs, sacct's JobRecords, GPU sample summaries, metric values) to a
Report: per-run figures, per-sweep aggregates, failures by cause, GPU-hours by state, best runs.

Efficiency figures use seff's formulas (slurmml.slurm.accounting). A run without an accounting record
yet (the poller has not seen its job, or it ran locally) falls back to the run's own start, end and
state; its `accounting` field says "registry" instead of "sacct" or "squeue".
"""

from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import replace
from typing import Any, Iterable, Optional

from slurmml.core.direction import default_metric, metric_mode, shared_direction
from slurmml.core.states import is_active, is_failed, is_final, run_state_of, shown_slurm_state
from slurmml.core.text import error_line, last_line
from slurmml.errors import SlurmmlError
from slurmml.report.model import BestRun, FailureGroup, Inputs, Report, RunRow, Summary
from slurmml.slurm.accounting import JobRecord, cpu_efficiency, gpu_hours, memory_efficiency, time_efficiency

IDLE_UTIL = 10.0  # a run whose GPUs averaged less than this utilization (%) counts as idle
BEST_RUNS = 5


# -- per run ----------------------------------------------------------------------------------------------------

def reconcile_state(run_state: str, record: Optional[JobRecord]) -> str:
    """One state per run. A final state in the registry wins: the poller has already weighed Slurm's word
    against the run's own end record there. Otherwise Slurm's final word fills in what the run did not record."""
    if is_final(run_state) or record is None or not record.state:
        return run_state
    state = run_state_of(record.state)  # BOOT_FAIL counts as NODE_FAIL, DEADLINE as TIMEOUT
    return state if is_final(state) else run_state


def failure_cause(state: str, exit_code: Optional[int], signal: Optional[int], error: Optional[str]) -> str:
    """A grouping key: `FAILED: exit 1, ValueError`, `FAILED: signal 9`, `TIMEOUT`, `CANCELLED`, `LOST: <reason>`."""
    if not is_failed(state):
        return ""
    if state == "LOST":
        return "LOST: " + _normalise_reason(error_line(error) or "no end recorded")
    if state != "FAILED":
        return state  # who cancelled is kept in the example; sacct may drop it later (tests/data/README.md)
    detail = f"signal {signal}" if signal else f"exit {exit_code}" if exit_code is not None else "exit unknown"
    exception = _exception_name(error)
    return f"FAILED: {detail}" + (f", {exception}" if exception else "")


def _exception_name(error: Optional[str]) -> str:
    """`ValueError` from a traceback's last line `ValueError: lr must be positive`."""
    match = re.match(r"([A-Za-z_][\w.]*)(?::|$)", last_line(error))
    if not match or not re.search(r"(Error|Exception|Interrupt|Exit|Warning)$", match.group(1)):
        return ""
    return match.group(1)


def _normalise_reason(text: str) -> str:
    """Job ids, pids and host names vary from run to run; the reason does not."""
    text = re.sub(r"\b\d+(?:_\d+)?\b", "N", text)
    return re.sub(r"\bon \S+ ", "on HOST ", text)


def run_row(run: dict[str, Any], record: Optional[JobRecord], sample: Optional[dict[str, Any]],
            metric_value: Optional[float], now: float) -> RunRow:
    if record is not None and not record.state:
        record = None  # sacct's "no such job": the run's own figures are all there is
    state = reconcile_state(run["state"], record)
    row = RunRow(
        run_id=run["id"], sweep_id=run.get("sweep_id"), job_num=run.get("job_num"),
        overrides=list(run.get("overrides") or []), state=state, run_state=run["state"],
        slurm_state=shown_slurm_state(run["state"], record.state if record else None),
        accounting=(record.source or "sacct") if record else "registry",
        slurm_job_id=run.get("slurm_job_id"), user=run.get("user"), created=run.get("created"),
        started=run.get("started"), ended=run.get("ended"), metric=metric_value, result=run.get("result"),
    )
    error = run.get("error")
    if record is not None:
        row.started = record.start if record.start is not None else row.started
        row.ended = record.end if record.end is not None else row.ended
        row.elapsed_s = record.elapsed_s
        row.timelimit_s, row.alloc_cpus, row.alloc_gpus = record.timelimit_s, record.alloc_cpus, record.alloc_gpus
        row.req_mem_mb, row.max_rss_mb, row.total_cpu_s = record.req_mem_mb, record.max_rss_mb, record.total_cpu_s
        if record.max_rss_mb is None and run.get("own_max_rss_mb"):
            # ended before Slurm's first memory sample: the run's own peak, over the memory Slurm gave it
            record = replace(record, max_rss_mb=run["own_max_rss_mb"])
            row.max_rss_mb = record.max_rss_mb
        row.cpu_eff, row.mem_eff, row.time_eff = cpu_efficiency(record), memory_efficiency(record), time_efficiency(record)
        row.gpu_hours = gpu_hours(record)
        row.exit_code, row.signal = record.exit_code, record.signal
        row.reason = record.reason or error_line(error)
        if state == run["state"] and is_failed(state) and run.get("exit_code") is not None:
            row.exit_code = run["exit_code"]  # the run's own outcome decided the state
    else:
        row.exit_code = run.get("exit_code")
        row.reason = error_line(error)
    if row.elapsed_s is None and row.started is not None:
        end = row.ended if row.ended is not None else (now if is_active(state) else None)
        row.elapsed_s = None if end is None else max(0.0, end - row.started)
    if sample:
        row.gpu_samples = sample["count"]
        row.gpu_util, row.gpu_mem_max_mb, row.gpu_mem_total_mb = sample["util"], sample["mem_max"], sample["mem_total"]
        if row.alloc_gpus is None:
            row.alloc_gpus = sample["gpus"]  # no accounting: the GPUs the sampler saw
    if row.gpu_hours is None and row.elapsed_s is not None and row.alloc_gpus is not None:
        row.gpu_hours = row.elapsed_s * row.alloc_gpus / 3600
    row.executions, row.repeated_steps = run.get("executions") or 1, run.get("repeated_steps") or 0
    row.requeued_s = run.get("requeued_s")
    if row.requeued_s and row.alloc_gpus:  # sacct's figures are the last execution's: add the earlier ones
        row.gpu_hours_requeued = row.requeued_s * row.alloc_gpus / 3600
        row.gpu_hours = (row.gpu_hours or 0.0) + row.gpu_hours_requeued
    if row.alloc_gpus and row.gpu_util is not None:
        row.idle_gpu = row.gpu_util < IDLE_UTIL
    row.cause = failure_cause(state, row.exit_code, row.signal, error or (row.reason if state == "LOST" else None))
    return row


# -- over groups of runs ------------------------------------------------------------------------------------------

def failed_gpu_hours(rows: Iterable[RunRow]) -> float:
    """GPU-hours of the runs that failed (cancelled, timed-out and lost runs included)."""
    return sum((row.gpu_hours or 0.0 for row in rows if is_failed(row.state)), 0.0)


def idle_gpu_hours(rows: Iterable[RunRow], failed_too: bool = True) -> float:
    """GPU-hours of the runs whose GPUs averaged under IDLE_UTIL; `failed_too=False` leaves out the runs that
    failed, so that failed and idle hours add up without counting a run twice."""
    return sum((row.gpu_hours or 0.0 for row in rows if row.idle_gpu and (failed_too or not is_failed(row.state))),
               0.0)


def summarize(sweep_id: str, rows: list[RunRow], mode: str = "max", name: Optional[str] = None,
              user: Optional[str] = None) -> Summary:
    summary = Summary(sweep_id=sweep_id, name=name, user=user, runs=len(rows))
    used = core = 0.0
    mem, limits, utils = [], [], []
    for row in rows:
        summary.states[row.state] = summary.states.get(row.state, 0) + 1
        summary.completed += row.state == "COMPLETED"
        summary.failed += is_failed(row.state)
        summary.active += is_active(row.state)
        summary.accounted += row.accounting != "registry"
        summary.elapsed_s += row.elapsed_s or 0.0
        if row.cpu_eff is not None:
            used += row.total_cpu_s or 0.0
            core += (row.elapsed_s or 0) * (row.alloc_cpus or 0)
        if row.mem_eff is not None:
            mem.append(row.mem_eff)
        if row.time_eff is not None:
            limits.append(row.time_eff)
        if row.gpu_util is not None:
            utils.append(row.gpu_util)
        summary.gpu_hours += row.gpu_hours or 0.0
        summary.gpu_hours_requeued += row.gpu_hours_requeued
        summary.repeated_steps += row.repeated_steps
        if _rankable(row) and (
                summary.best_value is None
                or (row.metric > summary.best_value if mode == "max" else row.metric < summary.best_value)):
            summary.best_run, summary.best_value = row.run_id, row.metric
    summary.gpu_hours_failed, summary.gpu_hours_idle = failed_gpu_hours(rows), idle_gpu_hours(rows)
    summary.cpu_eff = used / core if core else None
    summary.mem_eff = statistics.fmean(mem) if mem else None
    summary.time_eff = statistics.fmean(limits) if limits else None
    summary.gpu_util = statistics.fmean(utils) if utils else None
    summary.states = dict(sorted(summary.states.items(), key=lambda item: (-item[1], item[0])))
    return summary


def group_failures(rows: Iterable[RunRow]) -> list[FailureGroup]:
    groups: dict[str, FailureGroup] = {}
    for row in rows:
        if not row.cause:
            continue
        group = groups.get(row.cause)
        if group is None:
            group = groups[row.cause] = FailureGroup(cause=row.cause, state=row.state)
        group.count += 1
        group.gpu_hours += row.gpu_hours or 0.0
        group.runs.append(row.run_id)
        if not group.example and row.reason:
            group.example = row.reason
    return sorted(groups.values(), key=lambda g: (-g.count, -g.gpu_hours, g.cause))


def gpu_hours_by_state(rows: Iterable[RunRow]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for row in rows:
        if row.gpu_hours:
            totals[row.state] = totals.get(row.state, 0.0) + row.gpu_hours
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


# -- ranking ------------------------------------------------------------------------------------------------------

def result_values(runs: list[dict[str, Any]]) -> dict[str, float]:
    """run id -> the run's result, for the runs that recorded one."""
    return {run["id"]: run["result"] for run in runs if run.get("result") is not None}


def pick_metric(inputs: Inputs) -> Optional[str]:
    """What a report ranks by when the user named nothing (slurmml.core.direction.default_metric)."""
    results = result_values(inputs.runs)
    # a direction one of the sweeps with results declared (each sweep is then ranked its own way)
    declared = next((run["direction"] for run in inputs.runs if run.get("direction") and run["id"] in results), None)
    return default_metric(inputs.metric_counts, bool(results), declared)


def distinguishing_labels(overrides: list[list[str]]) -> list[str]:
    """For each run, the overrides not shared by all the runs (`lr=0.01 model=mlp`)."""
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    return [" ".join(o for o in run if o not in common) for run in overrides]


def _rankable(row: RunRow) -> bool:
    """A run that may be best: it has a value, not NaN, and it did not fail (it completed, or is still going)."""
    return row.metric is not None and not math.isnan(row.metric) and not is_failed(row.state)


def best_runs(rows: list[RunRow], mode: str, limit: int = BEST_RUNS) -> list[BestRun]:
    """The best runs, each labelled by the overrides that tell it apart (with its id where two labels match)."""
    ranked = [r for r in rows if _rankable(r)]
    ranked.sort(key=lambda r: r.metric, reverse=mode == "max")
    ranked = ranked[:limit]
    labels = distinguishing_labels([r.overrides for r in ranked])
    seen: dict[str, int] = {}
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
    return [BestRun(run_id=r.run_id, sweep_id=r.sweep_id, value=r.metric,
                    label=(label if label and seen[label] == 1 else f"{label} ({r.run_id})".strip() if label else r.run_id),
                    overrides=r.overrides, state=r.state)
            for r, label in zip(ranked, labels)]


# -- the report ---------------------------------------------------------------------------------------------------

def aggregate(inputs: Inputs, metric: Optional[str] = None, mode: Optional[str] = None, filters: Optional[dict] = None,
              now: Optional[float] = None, metric_picked: bool = False) -> Report:
    """The rows read from the registry to a Report (no curves: slurmml.report.collect.build_report adds them).

    Without `mode`, slurmml.core.direction decides which way is better: for each sweep from the direction it declared,
    for the totals and the best runs from the direction the sweeps in the report agree on.
    """
    if mode not in (None, "max", "min"):
        raise SlurmmlError(f"mode must be max or min, not {mode!r}")

    def mode_for(directions: Iterable[Optional[str]]) -> str:
        return metric_mode(metric, shared_direction(directions), mode) if metric else "max"

    now = time.time() if now is None else now
    rows = [run_row(run, inputs.jobs.get(run["slurm_job_id"]) if run.get("slurm_job_id") else None,
                    inputs.samples.get(run["id"]), inputs.metric_values.get(run["id"]), now)
            for run in inputs.runs]
    by_sweep: dict[str, list[RunRow]] = {}
    names: dict[str, tuple[Optional[str], Optional[str], Optional[str]]] = {}
    for run, row in zip(inputs.runs, rows):
        key = row.sweep_id or "(local runs)"
        by_sweep.setdefault(key, []).append(row)
        names.setdefault(key, (run.get("sweep_name"), run.get("user"), run.get("direction")))
    sweeps = [summarize(key, group, mode_for([names[key][2]]), *names[key][:2]) for key, group in by_sweep.items()]
    # Slurm runs without any record, and ended ones without sacct's final word (squeue's last look is no account)
    unaccounted = [r.run_id for r in rows if r.slurm_job_id and (
        r.accounting == "registry" or (is_final(r.run_state) and not (r.accounting == "sacct" and r.slurm_state)))]
    overall = mode_for(direction for _, _, direction in names.values())
    return Report(
        generated=now, filters=filters or {}, metric=metric, mode=overall, metric_picked=metric_picked,
        totals=summarize("all", rows, overall), sweeps=sweeps, runs=rows, failures=group_failures(rows),
        gpu_hours_by_state=gpu_hours_by_state(rows), best=best_runs(rows, overall) if metric else [],
        unaccounted=unaccounted,
    )

