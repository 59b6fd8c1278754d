"""What a report is made of: per-run rows, per-group summaries, failure groups, best runs, and the rows read
from the registry that slurmml.report.aggregate turns into them. Plain dataclasses, no behaviour beyond JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from slurmml.slurm.accounting import JobRecord


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
    gpu_hours: Optional[float] = None  # every execution's, requeued ones included
    executions: int = 1
    requeued_s: Optional[float] = None  # wall time of the executions a requeue ended (time limit, preemption)
    gpu_hours_requeued: float = 0.0  # their GPU-hours: what the requeues cost, included in gpu_hours
    repeated_steps: int = 0  # steps trained again after a resume (their first values were superseded)
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
    projected: Optional[float] = None  # an active run's projected final value of the metric (core/projection.py)
    projected_spread: Optional[float] = None  # its rough 95 % half-width


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
    gpu_hours_idle: float = 0.0  # failed runs on idle GPUs included
    gpu_hours_requeued: float = 0.0  # on executions a requeue ended
    repeated_steps: int = 0
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
    early_stop: list[dict[str, Any]] = field(default_factory=list)  # per sweep with a rule (report/savings.py)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def json_safe(value: Any) -> Any:
    """NaN and infinities become None so the JSON is valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@dataclass
class Inputs:
    """The rows a report is computed from, as slurmml.report.collect reads them from the registry."""

    runs: list[dict[str, Any]]  # id, sweep_id, job_num, overrides (list), state, slurm_job_id, exit_code, error,
    #                             created, started, ended, result, own_max_rss_mb, sweep_name, user, direction,
    #                             run (the registry's compact key; aggregate does not need it)
    jobs: dict[str, JobRecord]  # slurm job id -> the poller's record
    samples: dict[str, dict[str, Any]]  # run id -> count, util, mem_max, mem_total, gpus
    metric_values: dict[str, float]  # run id -> last value of the metric
    metric_counts: dict[str, int] = field(default_factory=dict)  # metric name -> runs that logged it
