"""Pure: what a sweep's early stopping saved, for `slurmml report` (docs/control.md).

Hours saved are the hours each pruned run would still have used had it run on: up to the median elapsed time of
the sweep's completed runs, or up to its time limit while none has completed, minus what it did use; times its
allocated GPUs for GPU-hours and its CPUs for CPU-hours. "The best survived" asks whether pruning may have cost the
winner: the completed run that ended best was at least as good as every pruned run at the rung that run was pruned
at (for the median rule, a pruned run's value is its best so far).
"""

from __future__ import annotations

import statistics
from typing import Any, Mapping, Optional, Sequence

from slurmml.report.model import RunRow


def planned_elapsed_s(rows: Sequence[RunRow], row: RunRow) -> tuple[Optional[float], str]:
    """How long a pruned run would have run: the median elapsed of completed runs, else its time limit."""
    done = [r.elapsed_s for r in rows if r.state == "COMPLETED" and r.elapsed_s]
    if done:
        return statistics.median(done), "median of completed runs"
    if row.timelimit_s:
        return float(row.timelimit_s), "time limits"
    return None, "unknown"


def early_stop_summary(sweep_id: str, rule: Mapping[str, Any], rows: Sequence[RunRow],
                       prunings: Sequence[Mapping[str, Any]], curves: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """One sweep's early-stopping figures. `curves`: run id -> its values of the rule's metric in step order;
    `prunings`: the registry's decisions (run_id, rung, value, ...)."""
    pruned = {p["run_id"]: p for p in prunings}
    gpu_saved = cpu_saved = 0.0
    basis = "nothing pruned"
    for row in rows:
        if row.run_id not in pruned:
            continue
        planned, basis = planned_elapsed_s(rows, row)
        if planned is None:
            continue
        left_h = max(0.0, planned - (row.elapsed_s or 0.0)) / 3600
        gpu_saved += left_h * (row.alloc_gpus or 0)
        cpu_saved += left_h * (row.alloc_cpus or 1)
    lower_better = rule.get("mode") == "min"
    completed = {row.run_id for row in rows if row.state == "COMPLETED"}
    finals = {run_id: values[-1] for run_id, values in curves.items() if values and run_id in completed}
    best = min(finals, key=lambda r: (finals[r] if lower_better else -finals[r], r)) if finals else None
    survived: Optional[bool] = None
    if best is not None:
        survived = best not in pruned and all(_ahead(curves[best], p, lower_better) for p in prunings)
    return {
        "sweep_id": sweep_id, "rule": dict(rule), "runs": len(rows), "pruned": len(pruned),
        "gpu_hours_used": sum(r.gpu_hours or 0.0 for r in rows),
        "cpu_hours_used": sum((r.elapsed_s or 0.0) * (r.alloc_cpus or 1) for r in rows) / 3600,
        "gpu_hours_saved": gpu_saved, "cpu_hours_saved": cpu_saved, "saved_basis": basis,
        "best_run": best, "best_value": finals.get(best) if best else None, "best_survived": survived,
    }


def _ahead(best_values: Sequence[float], pruning: Mapping[str, Any], lower_better: bool) -> bool:
    """The best run's value at the pruned run's rung is no worse than the pruned run's (a rung it never reached
    cannot be compared: it counts as ahead only if it got there)."""
    rung = pruning.get("rung") or 0
    if rung < 1 or len(best_values) < rung:
        return False
    mine, theirs = best_values[rung - 1], pruning["value"]
    return mine <= theirs if lower_better else mine >= theirs
