"""`slurmml report`: what runs cost and how well they used what they asked for, from the registry's cache.

Two parts. `collect` reads rows from a Registry (runs, the poller's slurm_jobs cache, GPU samples, metric
summaries), and never calls Slurm. `aggregate` is pure: rows in, a Report out (per-run figures, per-sweep
aggregates, failures by cause, GPU-hours by state, best runs). `build_report` does both and adds the
metric curves of the best runs.

Efficiency figures use seff's formulas (slurmml.slurm.accounting). A run without an accounting record
yet (the poller has not seen its job, or it ran locally) falls back to the run's own start, end and
state; its `accounting` field says "registry" instead of "sacct" or "squeue".
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Optional, Union

from slurmml.errors import SlurmmlError
from slurmml.core.direction import RESULT, default_metric, metric_mode, shared_direction
from slurmml.slurm.accounting import JobRecord, cpu_efficiency, gpu_hours, memory_efficiency, time_efficiency
from slurmml.core.states import is_active, is_failed, is_final, run_state_of, shown_slurm_state

IDLE_UTIL = 10.0  # a run whose GPUs averaged less than this utilization (%) counts as idle
BEST_RUNS = 5

When = Union[None, str, float, int]


# -- what a report holds --------------------------------------------------------------------------------------

@dataclass
class RunRow:
    run_id: str
    sweep_id: Optional[str]
    job_num: Optional[int]
    overrides: list[str]
    state: str  # reconciled: Slurm's final word, or the run's own outcome where Slurm cannot know better
    run_state: str  # what the run itself (or the launcher) recorded
    slurm_state: Optional[str]  # what the poller last saw; None without an accounting record
    accounting: str  # "sacct" or "squeue" (the poller's record), or "registry" (the run's own times only)
    slurm_job_id: Optional[str] = None
    user: Optional[str] = None
    created: Optional[float] = None
    started: Optional[float] = None
    ended: Optional[float] = None
    elapsed_s: Optional[float] = None
    timelimit_s: Optional[int] = None
    alloc_cpus: Optional[int] = None
    alloc_gpus: Optional[int] = None  # from AllocTRES; for runs without accounting, the GPUs the sampler saw
    req_mem_mb: Optional[float] = None
    max_rss_mb: Optional[float] = None
    total_cpu_s: Optional[float] = None
    cpu_eff: Optional[float] = None  # fractions: 0.5 is 50 %
    mem_eff: Optional[float] = None
    time_eff: Optional[float] = None
    gpu_hours: Optional[float] = None
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    reason: str = ""  # Slurm's reason (who cancelled, why pending), or the telling line of the run's error
    cause: str = ""  # failure cause, "" unless the run failed
    gpu_util: Optional[float] = None  # mean sampled utilization, %
    gpu_mem_max_mb: Optional[float] = None
    gpu_mem_total_mb: Optional[float] = None
    gpu_samples: int = 0
    idle_gpu: Optional[bool] = None  # None: no GPU, or no samples to tell
    metric: Optional[float] = None  # last value of the report's metric
    result: Optional[float] = None  # the task's numeric return value: what the sweeper optimized


@dataclass
class Summary:
    """Aggregates over a group of runs (a sweep, or all the report's runs)."""

    sweep_id: str
    name: Optional[str] = None
    user: Optional[str] = None
    runs: int = 0
    states: dict[str, int] = field(default_factory=dict)
    completed: int = 0
    failed: int = 0  # final, not COMPLETED (cancelled and timed-out runs included)
    active: int = 0  # not final yet
    accounted: int = 0  # runs with an accounting record
    elapsed_s: float = 0.0  # summed wall time
    cpu_eff: Optional[float] = None  # core-time weighted: sum of TotalCPU / sum of Elapsed x AllocCPUS
    mem_eff: Optional[float] = None  # mean over runs with a figure
    time_eff: Optional[float] = None  # mean over runs with a time limit
    gpu_hours: float = 0.0
    gpu_hours_failed: float = 0.0
    gpu_hours_idle: float = 0.0
    gpu_util: Optional[float] = None  # mean over runs with samples
    best_run: Optional[str] = None
    best_value: Optional[float] = None


@dataclass
class FailureGroup:
    cause: str
    state: str
    count: int = 0
    gpu_hours: float = 0.0
    runs: list[str] = field(default_factory=list)
    example: str = ""  # one run's reason or error line


@dataclass
class BestRun:
    run_id: str
    sweep_id: Optional[str]
    value: float
    label: str  # the overrides that tell this run from the other best runs
    overrides: list[str]
    state: str
    curve: list[tuple[Any, float]] = field(default_factory=list)


@dataclass
class Report:
    generated: float
    filters: dict[str, Any]
    metric: Optional[str]
    mode: str
    metric_picked: bool  # True when the report chose the metric itself
    totals: Summary
    sweeps: list[Summary]
    runs: list[RunRow]
    failures: list[FailureGroup]
    gpu_hours_by_state: dict[str, float]
    best: list[BestRun]
    unaccounted: list[str]  # Slurm runs that have no accounting record yet

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


def _clean(value: Any) -> Any:
    """NaN and infinities become None so the JSON is valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


# -- the inputs (rows read from the registry) -----------------------------------------------------------------

@dataclass
class Inputs:
    runs: list[dict[str, Any]]  # id, sweep_id, job_num, overrides (list), state, slurm_job_id, exit_code, error,
    #                             created, started, ended, result, sweep_name, user, direction (the sweep's)
    jobs: dict[str, JobRecord]  # slurm job id -> the poller's record
    samples: dict[str, dict[str, Any]]  # run id -> count, util, mem_max, mem_total, gpus
    metric_values: dict[str, float]  # run id -> last value of the metric
    metric_counts: dict[str, int] = field(default_factory=dict)  # metric name -> runs that logged it


def parse_when(text: When, now: Optional[float] = None) -> Optional[float]:
    """`2026-11-01`, `2026-11-01T10:30`, `2026-11-01 10:30:00` (local time), `7d`/`12h`/`30m` ago, or Unix seconds."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return float(text)
    now = time.time() if now is None else now
    value = text.strip()
    relative = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", value)
    if relative:
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[relative.group(2)]
        return now - float(relative.group(1)) * scale
    for pattern in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            return time.mktime(time.strptime(value, pattern))
        except ValueError:
            continue
    try:
        return float(value)
    except ValueError:
        raise SlurmmlError(f"cannot read time {text!r}: write 2026-11-01, 2026-11-01T10:30, or 7d / 12h ago") from None


def collect(registry: Any, sweep: Optional[str] = None, since: Optional[float] = None, until: Optional[float] = None,
            user: Optional[str] = None, metric: Optional[str] = None) -> Inputs:
    """Read what a report needs from the registry's tables (runs filtered by sweep, creation time and user)."""
    conn = registry.conn
    conditions, args = [], []
    if sweep:
        conditions.append("r.sweep_id = ?")
        args.append(sweep)
    if since is not None:
        conditions.append("coalesce(r.created, r.started) >= ?")
        args.append(since)
    if until is not None:
        conditions.append("coalesce(r.created, r.started) < ?")
        args.append(until)
    sql = ("SELECT r.run, r.id, r.sweep_id, r.job_num, r.overrides, r.state, r.slurm_job_id, r.exit_code, r.error, "
           "r.created, r.started, r.ended, r.result, r.max_rss_mb AS own_max_rss_mb, s.name AS sweep_name, s.user AS user, s.direction AS direction "
           "FROM runs r LEFT JOIN sweeps s ON s.id = r.sweep_id "
           f"{'WHERE ' + ' AND '.join(conditions) if conditions else ''} "
           "ORDER BY coalesce(r.sweep_id, ''), r.job_num, r.created")
    owner = _registry_owner(registry)
    runs, keys = [], {}
    for row in conn.execute(sql, args):
        run = dict(row)
        run["overrides"] = json.loads(run["overrides"] or "[]")
        if run["sweep_id"] is None:
            run["user"] = run["user"] or owner  # a plain-script run belongs to whoever owns this registry
        if user and run["user"] != user:
            continue
        keys[run.pop("run")] = run["id"]
        runs.append(run)
    job_ids = {r["slurm_job_id"] for r in runs if r["slurm_job_id"]}
    jobs = registry.job_records(job_ids) if job_ids else {}
    samples = {}
    for run_key, count, util, mem_max, mem_total, gpus in conn.execute(
            "SELECT run, count(*), avg(util), max(mem_used), max(mem_total), count(DISTINCT coalesce(uuid, gpu)) "
            "FROM system_samples GROUP BY run"):
        if run_key in keys:
            samples[keys[run_key]] = {"count": count, "util": util, "mem_max": mem_max, "mem_total": mem_total,
                                      "gpus": gpus}
    metric_counts: dict[str, int] = {}
    for run_key, name in conn.execute("SELECT s.run, k.name FROM metric_summary s JOIN metric_keys k USING (key)"):
        if run_key in keys:
            metric_counts[name] = metric_counts.get(name, 0) + 1
    values = {}
    if metric == RESULT:
        values = result_values(runs)
    elif metric:
        for run_key, last in conn.execute("SELECT s.run, s.last FROM metric_summary s JOIN metric_keys k USING (key) "
                                          "WHERE k.name = ?", (metric,)):
            if run_key in keys and last is not None:
                values[keys[run_key]] = last
    return Inputs(runs, jobs, samples, values, metric_counts)


def result_values(runs: list[dict[str, Any]]) -> dict[str, float]:
    """run id -> the run's result, for the runs that recorded one."""
    return {run["id"]: run["result"] for run in runs if run.get("result") is not None}


def _registry_owner(registry: Any) -> Optional[str]:
    try:
        import pwd

        return pwd.getpwuid(registry.path.stat().st_uid).pw_name
    except (OSError, KeyError, ImportError, AttributeError):
        return None


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
        return "LOST: " + _normalise_reason(_error_line(error) or "no end recorded")
    if state != "FAILED":
        return state  # who cancelled is kept in the example; sacct may drop it later (tests/data/README.md)
    detail = f"signal {signal}" if signal else f"exit {exit_code}" if exit_code is not None else "exit unknown"
    exception = _exception_name(error)
    return f"FAILED: {detail}" + (f", {exception}" if exception else "")


def _first_line(text: Optional[str]) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def _error_line(text: Optional[str]) -> str:
    """The line of an error that says what went wrong: a traceback's last line, else the first line."""
    first = _first_line(text)
    return _last_line(text) if first.startswith("Traceback") else first


def _last_line(text: Optional[str]) -> str:
    return next((line.strip() for line in reversed((text or "").splitlines()) if line.strip()), "")


def _exception_name(error: Optional[str]) -> str:
    """`ValueError` from a traceback's last line `ValueError: lr must be positive`."""
    match = re.match(r"([A-Za-z_][\w.]*)(?::|$)", _last_line(error))
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
        row.reason = record.reason or _error_line(error)
        if state == run["state"] and is_failed(state) and run.get("exit_code") is not None:
            row.exit_code = run["exit_code"]  # the run's own outcome decided the state
    else:
        row.exit_code = run.get("exit_code")
        row.reason = _error_line(error)
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
    if row.alloc_gpus and row.gpu_util is not None:
        row.idle_gpu = row.gpu_util < IDLE_UTIL
    row.cause = failure_cause(state, row.exit_code, row.signal, error or (row.reason if state == "LOST" else None))
    return row


# -- aggregation (pure) -----------------------------------------------------------------------------------------

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
        hours = row.gpu_hours or 0.0
        summary.gpu_hours += hours
        if is_failed(row.state):
            summary.gpu_hours_failed += hours
        if row.idle_gpu:
            summary.gpu_hours_idle += hours
        if _rankable(row) and (
                summary.best_value is None
                or (row.metric > summary.best_value if mode == "max" else row.metric < summary.best_value)):
            summary.best_run, summary.best_value = row.run_id, row.metric
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


def distinguishing_labels(overrides: list[list[str]]) -> list[str]:
    """For each run, the overrides not shared by all the runs (`lr=0.01 model=mlp`); unique labels."""
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    labels = [" ".join(o for o in run if o not in common) for run in overrides]
    return labels


def _rankable(row: RunRow) -> bool:
    """A run that may be best: it has a value, not NaN, and it did not fail (it completed, or is still going)."""
    return row.metric is not None and not math.isnan(row.metric) and not is_failed(row.state)


def best_runs(rows: list[RunRow], mode: str, limit: int = BEST_RUNS) -> list[BestRun]:
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


def aggregate(inputs: Inputs, metric: Optional[str] = None, mode: Optional[str] = None, filters: Optional[dict] = None,
              now: Optional[float] = None, metric_picked: bool = False) -> Report:
    """Pure: the rows read from the registry to a Report (no curves: build_report adds them).

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


def build_report(registry: Any, sweep: Optional[str] = None, since: When = None, until: When = None,
                 user: Optional[str] = None, metric: Optional[str] = None, mode: Optional[str] = None,
                 now: Optional[float] = None, max_points: int = 500) -> Report:
    """A report over a sweep, a time window (runs created in [since, until)), a user, or all runs.

    Without `metric`, slurmml.core.direction.default_metric picks: the runs' result where the sweeps declared which way
    it is better, else the validation metric most runs logged. Without `mode`, slurmml.core.direction decides.
    """
    now = time.time() if now is None else now
    start, end = parse_when(since, now), parse_when(until, now)
    inputs = collect(registry, sweep, start, end, user, metric)
    picked = False
    if metric is None:
        results = result_values(inputs.runs)
        # a direction one of the sweeps with results declared (each sweep is then ranked its own way)
        declared = next((run["direction"] for run in inputs.runs if run.get("direction") and run["id"] in results), None)
        metric = default_metric(inputs.metric_counts, bool(results), declared)
        if metric == RESULT:
            inputs.metric_values = results
        elif metric is not None:
            inputs = collect(registry, sweep, start, end, user, metric)
        picked = metric is not None
    filters = {"sweep": sweep, "since": since, "until": until, "user": user}
    report = aggregate(inputs, metric, mode, {k: v for k, v in filters.items() if v is not None}, now, picked)
    if report.best and metric and metric != RESULT:  # a result is one value, not a curve
        curves = registry.curves([b.run_id for b in report.best], metric, max_points)
        for best in report.best:
            best.curve = [tuple(p) for p in curves.get(best.run_id, [])]
    return report


# -- flat rows for tables and CSV ---------------------------------------------------------------------------------

RUN_COLUMNS = ["run_id", "sweep_id", "job_num", "state", "accounting", "slurm_job_id", "elapsed_s", "alloc_cpus",
               "alloc_gpus", "cpu_eff", "mem_eff", "time_eff", "gpu_hours", "gpu_util", "gpu_mem_max_mb", "idle_gpu",
               "max_rss_mb", "req_mem_mb", "total_cpu_s", "timelimit_s", "exit_code", "signal", "cause", "reason",
               "run_state", "slurm_state", "started", "ended", "overrides", "result", "metric"]
SWEEP_COLUMNS = ["sweep_id", "name", "runs", "completed", "failed", "active", "accounted", "elapsed_s", "cpu_eff",
                 "mem_eff", "time_eff", "gpu_hours", "gpu_hours_failed", "gpu_hours_idle", "gpu_util", "best_run",
                 "best_value"]


def run_records(report: Report) -> list[dict[str, Any]]:
    rows = []
    for run in report.runs:
        row = {column: getattr(run, column) for column in RUN_COLUMNS}
        row["overrides"] = " ".join(run.overrides)
        if report.metric and report.metric != RESULT:
            row[report.metric] = row.pop("metric")
        else:
            row.pop("metric")
        rows.append(_clean(row))
    return rows


def sweep_records(report: Report) -> list[dict[str, Any]]:
    return [_clean({column: getattr(s, column) for column in SWEEP_COLUMNS}) for s in report.sweeps]
