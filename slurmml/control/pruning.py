"""Early stopping over the registry: one round, run inside the shared poller's rounds by whoever is watching
(`slurmml watch`, the TUI, the launcher's wait mode, any command that shows runs), never by a daemon of its own.

A round reads each watched sweep's curves of its rule's metric from the registry, asks the pure rule
(core/early_stop.py) which running runs lost, claims each decision in the registry (a run is pruned once, however
many watchers decide at the same moment), and sends each loser a graceful `stop` through the live-control channel
(control/live.py): the job saves a checkpoint at its next checkpoint point and ends PRUNED. A pruned run still
active `grace_s` after the decision gets one `scancel` together with the other late losers of that round, and is
recorded PRUNED (with the rung and the values it lost on) before Slurm's CANCELLED arrives. docs/control.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from slurmml.core.early_stop import Curve, Rule, decide, parse_rule
from slurmml.core.states import ACTIVE_STATES
from slurmml.slurm.commands import CommandResult, run_command


DEFAULT_GRACE_S = Rule.__dataclass_fields__["grace_s"].default  # for prunings whose sweep no longer has a rule


@dataclass
class PruneReport:
    pruned: list[tuple[str, str]] = field(default_factory=list)  # (run id, reason) decided this round
    cancelled: list[str] = field(default_factory=list)  # run ids scancelled this round
    problems: list[str] = field(default_factory=list)  # rules that cannot be applied, said when they change


def curves_of(rows: list[dict[str, Any]]) -> list[Curve]:
    """The registry's runs and points as the rule takes them: one value per step (the last logged at it); points
    logged without a step each count, in the order they were logged."""
    curves = []
    for row in rows:
        by_step: dict[Any, tuple] = {}
        unstepped = []
        for step, value, when in row["points"]:
            if step is None:
                unstepped.append((step, value, when))
            else:
                by_step[step] = (step, value, when)
        ordered = sorted(by_step.values(), key=lambda point: point[0]) + sorted(unstepped, key=lambda p: p[2] or 0)
        curves.append(Curve(row["run_id"], row["state"] in ACTIVE_STATES, tuple(ordered)))
    return curves


def judge(registry: Any, sweep_id: str, spec: dict[str, Any]) -> tuple[Any, Any]:
    """The sweep's rule and what it decides now, from the registry (pure reads)."""
    rule = parse_rule(spec)
    rows = registry.sweep_curves(sweep_id, rule.metric)
    others = [name for name in registry.sweep_metric_names(sweep_id) if name != rule.metric]
    return rule, decide(rule, curves_of(rows), others)


def prune_round(registry: Any, now: Optional[float] = None, run: Callable[..., CommandResult] = run_command,
                warn: Callable[[str], None] = lambda line: None, me: Optional[str] = None) -> PruneReport:
    """One round over every sweep of this user that has a rule and a run still active."""
    import getpass

    from slurmml.control.live import send

    now = time.time() if now is None else now
    me = me or getpass.getuser()
    report = PruneReport()
    grace: dict[str, float] = {}
    for sweep_id, spec, _ in registry.watched_sweeps(me):
        registry.ingest(sweep_id)  # decide on the newest points
        try:
            rule, decision = judge(registry, sweep_id, spec)
        except ValueError as error:  # a rule stored by an older version that this one no longer takes
            _say_once(registry, sweep_id, f"sweep {sweep_id}: {error}", report, warn)
            continue
        grace[sweep_id] = rule.grace_s
        _say_once(registry, sweep_id, f"sweep {sweep_id}: {decision.problem}" if decision.problem else None,
                  report, warn)
        for verdict in decision.prune:
            reason = verdict.reason(rule)
            if not registry.claim_pruning(verdict.run_id, sweep_id, verdict, reason, now):
                continue  # another watcher decided it, or the run ended meanwhile
            sent = send(registry, verdict.run_id, "stop", {"state": "PRUNED", "reason": f"pruned: {reason}"},
                        source="early_stop", me=me, timeout_s=rule.grace_s, now=now)
            if not sent.ok:  # not this user's to stop (or its folder is out of reach): no decision, no scancel
                registry.release_pruning(verdict.run_id)
                warn(f"early stopping: {sent.message}")
                continue
            registry.note_pruning_control(verdict.run_id, sent.control_id)
            report.pruned.append((verdict.run_id, reason))
    _cancel_late(registry, now, grace, run, report, warn)
    return report


def _say_once(registry: Any, sweep_id: str, problem: Optional[str], report: PruneReport,
              warn: Callable[[str], None]) -> None:
    if registry.set_early_stop_problem(sweep_id, problem) and problem:
        report.problems.append(problem)
        warn(problem)


def _cancel_late(registry: Any, now: float, grace: dict[str, float], run: Callable[..., CommandResult],
                 report: PruneReport, warn: Callable[[str], None]) -> None:
    """One scancel for every pruned run that did not stop within its grace (local runs have no job to cancel).
    The runs are recorded PRUNED once Slurm accepted; a refused scancel is tried again next round."""
    late = [row for row in registry.overdue_prunings(now, grace, DEFAULT_GRACE_S) if row["job_id"]]
    if not late:
        return
    claimed = registry.claim_cancels([row["run_id"] for row in late], now)
    jobs = [row["job_id"] for row in late if row["run_id"] in claimed]
    if not jobs:
        return
    result = run(["scancel", *jobs], timeout_s=30.0)
    if not result.ok:
        registry.release_cancels(claimed)
        problem = " ".join(result.stderr.split())[:300] or f"exit code {result.returncode}"
        warn(f"early stopping: scancel {' '.join(jobs)} failed ({problem}); trying again next round")
        return
    registry.mark_pruned(claimed, now)
    report.cancelled.extend(claimed)
