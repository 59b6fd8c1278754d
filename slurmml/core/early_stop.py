"""Which running runs of a sweep to stop early, decided from the runs' logged curves.

Pure and deterministic: the same curves give the same `Decision` whatever order they come in, so two
watchers of one sweep agree on what to stop. The caller stops the runs (a graceful signal, then scancel after
`grace_s`); this module only decides.

Counting. A run's history is its values of the metric in the order they were logged (one per logged step,
as given; NaN values are skipped, infinite ones count). "Rung r" is a run's r-th value (index r-1). Runs
that are no longer active (ended, already stopped) still count in every cut; only active runs are stopped.
In "max" mode values are negated internally, so "worse" always means larger; every number reported back is
in the metric's own sign.

Rules:
- hyperband (the semantics of W&B's hyperband early-terminate): rungs are int(min_steps * eta**k) for
  k = 0, 1, ... (deduplicated, ascending). The cut of rung r is taken over every run with at least r values:
  sort their r-th values, the cut is the one at sorted index int(n / eta). An active run is judged at the
  highest rung it has reached and stopped when its r-th value is strictly worse than the cut (a tie
  survives). Fewer than `min_runs` runs at that rung (the judged one included): not judged. A run that
  passed a rung can still be stopped there in a later round, when better runs reach it after it.
- median (Optuna's MedianPruner, Vizier's median stopping): an active run with at least `min_steps`
  values is judged at its latest index i: its best value over its first i values against the median of the
  i-th values of the other runs that have at least i values (the mean of the middle two for an even count).
  Stopped when strictly worse. At least max(1, min_runs) other runs must be there.
- asha (asynchronous successive halving as a stopping rule): rungs as hyperband. An active run is judged
  at the highest rung r it has reached, against only the runs whose r-th value came no later than its own
  (by the value's logged time; equal times count as earlier; the run itself included): the cut is at sorted
  index int(n / eta) of those values, stopped when strictly worse. The first run at a rung is never stopped
  there; a late run is judged against everyone before it. `min_runs` counts those n runs.

Problems (a `Decision` with a `problem` line and nothing stopped):
- the runs compared in a judgment logged that value at different steps (one run logs per epoch, another per
  batch): runs are compared value by value, so the steps must match (None matches only None);
- no run logged the metric at all while other metrics were logged (a misspelled name). No run logging
  anything yet is not a problem: nothing is stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from slurmml.core.direction import RESULT, metric_mode, name_direction

RULES = ("hyperband", "median", "asha")
MODES = ("min", "max")
KEYS = ("metric", "mode", "rule", "min_steps", "eta", "min_runs", "grace_s", "max_steps")
_MODE_WORDS = {"min": "min", "max": "max", "minimize": "min", "maximize": "max"}

Point = tuple[Optional[int], float, float]  # (step, value, time)


# ---- settings ----

def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _as_number(value: Any) -> Optional[float]:
    """A finite number from a number or a command line's string; None for anything else (True included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _whole(key: str, value: Any, least: int) -> int:
    number = _as_number(value)
    if number is None or number != int(number) or number < least:
        raise ValueError(f"early_stop: {key} must be a whole number of at least {least}, not {_shown(value)}")
    return int(number)


def _eta(value: Any) -> float:
    number = _as_number(value)
    if number is None or number <= 1:
        raise ValueError(f"early_stop: eta must be a number above 1, not {_shown(value)}")
    return float(number)


def _seconds(key: str, value: Any) -> float:
    number = _as_number(value)
    if number is None or number < 0:
        raise ValueError(f"early_stop: {key} must be a number of at least 0, not {_shown(value)}")
    return float(number)


def _optional_whole(key: str, value: Any, least: int) -> Optional[int]:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    return _whole(key, value, least)


def _mode(value: Any) -> str:
    word = _MODE_WORDS.get(value.strip().lower()) if isinstance(value, str) else None
    if word is None:
        raise ValueError(f"early_stop: unknown mode {_shown(value)} (one of {', '.join(MODES)})")
    return word


def _rule_name(value: Any) -> str:
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in RULES:
        raise ValueError(f"early_stop: unknown rule {_shown(value)} (one of {', '.join(RULES)})")
    return word


def _metric(value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("early_stop: metric is required")
    if not isinstance(value, str):
        raise ValueError(f"early_stop: metric must be a metric's name, not {_shown(value)}")
    return value.strip()


@dataclass(frozen=True)
class Rule:
    """A validated early-stopping rule; fields given as command-line strings are converted on construction."""
    metric: str
    mode: str
    rule: str = "hyperband"
    min_steps: int = 1
    eta: float = 3.0
    min_runs: int = 1
    grace_s: float = 60.0
    max_steps: Optional[int] = None

    def __post_init__(self) -> None:
        normalized = {
            "metric": _metric(self.metric), "mode": _mode(self.mode), "rule": _rule_name(self.rule),
            "min_steps": _whole("min_steps", self.min_steps, 1), "eta": _eta(self.eta),
            "min_runs": _whole("min_runs", self.min_runs, 0), "grace_s": _seconds("grace_s", self.grace_s),
            "max_steps": _optional_whole("max_steps", self.max_steps, 1),
        }
        for key, value in normalized.items():
            object.__setattr__(self, key, value)  # frozen: the one place a Rule's fields are set


def parse_rule(spec: Mapping[str, Any], declared: Optional[str] = None) -> Rule:
    """A Rule from a user's config mapping. Without a mode, `metric_mode(metric, declared)` decides.

    An explicit mode may not contradict the sweeper's declared direction where that direction is the only
    word on the metric: for `result` (the objective itself) or a name that says nothing ('objective').
    A loss minimized under a sweeper maximizing an accuracy result is fine.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"early_stop: expected a mapping of settings, not {type(spec).__name__}")
    unknown = sorted(str(key) for key in spec if key not in KEYS)
    if unknown:
        raise ValueError(f"early_stop: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    if declared is not None and declared not in MODES:
        raise ValueError(f"early_stop: unknown declared direction {_shown(declared)} (one of {', '.join(MODES)})")
    metric = _metric(spec.get("metric"))
    given = spec.get("mode")
    if given is None:
        mode = metric_mode(metric, declared)
    else:
        mode = _mode(given)
        speaks_for_itself = metric != RESULT and name_direction(metric) is not None
        if declared is not None and mode != declared and not speaks_for_itself:
            raise ValueError(f"early_stop: mode {mode!r} contradicts the sweeper's direction {declared!r} for {metric}")
    settings = {key: spec[key] for key in KEYS[2:] if spec.get(key) is not None}  # None: the default
    return Rule(metric=metric, mode=mode, **settings)


def rule_to_dict(rule: Rule) -> dict:
    """The rule as JSON-able data; parse_rule gives it back."""
    return {key: getattr(rule, key) for key in KEYS}


def rungs(rule: Rule, longest: int) -> list[int]:
    """The rung sizes (value counts) up to `longest`: int(min_steps * eta**k), deduplicated, ascending."""
    sizes: list[int] = []
    k = 0
    while (size := int(rule.min_steps * rule.eta ** k)) <= longest:
        if not sizes or size != sizes[-1]:
            sizes.append(size)
        k += 1
    return sizes


# ---- curves and answers ----

@dataclass(frozen=True)
class Curve:
    run_id: str
    active: bool  # still running: only active runs can be stopped
    points: tuple[Point, ...]  # (step, value, time), one per logged step, in step order


def _number(value: float) -> str:
    return f"{value:.4g}"


@dataclass(frozen=True)
class Verdict:
    run_id: str
    rung: int  # how many values were counted at the judged point (rung r is the r-th value)
    step: Optional[int]  # the step of that value
    value: float  # the value judged, in the metric's own sign
    threshold: float  # the cut it failed, in the metric's own sign
    compared: int  # how many runs' values made the cut

    def reason(self, rule: Rule) -> str:
        """One plain line saying why the run is stopped."""
        where = f"at step {self.step} (rung {self.rung})" if self.step is not None else f"at rung {self.rung}"
        if rule.rule == "median":
            return (f"best {rule.metric} {_number(self.value)} by {where[3:]} is worse than "
                    f"{_number(self.threshold)}, the median of {self.compared} other runs there")
        cut = (f"the hyperband cut of {self.compared} runs" if rule.rule == "hyperband"
               else f"the asha cut of the {self.compared} runs that reached rung {self.rung} first")
        return f"{rule.metric} {_number(self.value)} {where} is worse than {_number(self.threshold)}, {cut}"


@dataclass(frozen=True)
class Decision:
    prune: tuple[Verdict, ...]  # sorted by run_id
    problem: Optional[str] = None  # one line when the rule cannot be applied; prune is then empty


@dataclass(frozen=True)
class _History:
    run_id: str
    active: bool
    steps: tuple[Optional[int], ...]
    values: tuple[float, ...]  # negated in "max" mode: smaller is better
    times: tuple[float, ...]


@dataclass(frozen=True)
class _Judgment:
    run: _History
    index: int  # 1-based value count of the judged point
    value: float  # internal sign
    threshold: float  # internal sign
    compared: tuple[_History, ...]  # the runs whose index-th values made the threshold


def _history(curve: Curve, sign: float) -> _History:
    kept = [(step, value, at) for step, value, at in curve.points if not math.isnan(value)]
    return _History(curve.run_id, curve.active, tuple(p[0] for p in kept), tuple(sign * p[1] for p in kept),
                    tuple(p[2] for p in kept))


def _order(history: _History) -> tuple:
    """A total order on histories, so a shuffled input changes nothing (run ids may repeat)."""
    return (history.run_id, not history.active, history.values, history.times,
            tuple((s is None, s or 0) for s in history.steps))


def _cut(values: Sequence[float], eta: float) -> float:
    return sorted(values)[int(len(values) / eta)]


def _median(values: Sequence[float]) -> float:
    ordered, middle = sorted(values), len(values) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _highest_rung(rule: Rule, run: _History) -> Optional[int]:
    reached = rungs(rule, len(run.values))
    return reached[-1] if reached else None


def _hyperband(rule: Rule, run: _History, everyone: Sequence[_History]) -> Optional[_Judgment]:
    rung = _highest_rung(rule, run)
    if rung is None:
        return None
    there = tuple(other for other in everyone if len(other.values) >= rung)
    if len(there) < rule.min_runs:
        return None
    threshold = _cut([other.values[rung - 1] for other in there], rule.eta)
    return _Judgment(run, rung, run.values[rung - 1], threshold, there)


def _asha(rule: Rule, run: _History, everyone: Sequence[_History]) -> Optional[_Judgment]:
    rung = _highest_rung(rule, run)
    if rung is None:
        return None
    arrived = run.times[rung - 1]
    before = tuple(other for other in everyone
                   if len(other.values) >= rung and (other is run or other.times[rung - 1] <= arrived))
    if len(before) < rule.min_runs:
        return None
    threshold = _cut([other.values[rung - 1] for other in before], rule.eta)
    return _Judgment(run, rung, run.values[rung - 1], threshold, before)


def _median_rule(rule: Rule, run: _History, everyone: Sequence[_History]) -> Optional[_Judgment]:
    index = len(run.values)
    if index < rule.min_steps:
        return None
    others = tuple(other for other in everyone if other is not run and len(other.values) >= index)
    if len(others) < max(1, rule.min_runs):
        return None
    threshold = _median([other.values[index - 1] for other in others])
    return _Judgment(run, index, min(run.values[:index]), threshold, (run, *others))


_JUDGES: dict[str, Callable[[Rule, _History, Sequence[_History]], Optional[_Judgment]]] = {
    "hyperband": _hyperband, "median": _median_rule, "asha": _asha}


def _step_problem(metric: str, judgment: _Judgment) -> Optional[str]:
    """One line when the runs in a judgment logged its value at different steps."""
    index = judgment.index
    first, *rest = judgment.compared
    step = first.steps[index - 1]
    for other in rest:
        if other.steps[index - 1] != step:
            return (f"early_stop: the runs log {metric} at different steps (rung {index} is step {step} for run "
                    f"{first.run_id}, step {other.steps[index - 1]} for run {other.run_id}); rules compare runs "
                    f"at the same step")
    return None


def _missing_metric(rule: Rule, curves: Sequence[Curve], other_metrics: Sequence[str]) -> Optional[str]:
    others = sorted({name for name in other_metrics if name != rule.metric})
    if others and not any(curve.points for curve in curves):
        return f"early_stop: no run logs {rule.metric!r} (they log: {', '.join(others)})"
    return None


def decide(rule: Rule, curves: Sequence[Curve], other_metrics: Sequence[str] = ()) -> Decision:
    """Which active runs the rule stops now (see the module's docstring), or the problem that stops the rule."""
    problem = _missing_metric(rule, curves, other_metrics)
    if problem:
        return Decision((), problem)
    sign = -1.0 if rule.mode == "max" else 1.0
    everyone = sorted((_history(curve, sign) for curve in curves), key=_order)
    judge = _JUDGES[rule.rule]
    judgments = [found for run in everyone if run.active and (found := judge(rule, run, everyone)) is not None]
    for judgment in sorted(judgments, key=lambda j: (j.index, _order(j.run))):
        problem = _step_problem(rule.metric, judgment)
        if problem:
            return Decision((), problem)
    stopped = tuple(
        Verdict(j.run.run_id, j.index, j.run.steps[j.index - 1], sign * j.value, sign * j.threshold,
                len(j.compared) - (1 if rule.rule == "median" else 0))
        for j in judgments if j.value > j.threshold)
    return Decision(stopped)
