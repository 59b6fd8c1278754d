"""Which way is better: the one rule every command, report and screen ranks a metric or a run's result by.

Pure: no registry, no Hydra. `metric_mode` decides, `declared_direction` reads what a sweep declared.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional

RESULT = "result"  # the task's numeric return value: what Optuna, Ax and Nevergrad optimize

# One word list for the name rule, matched against the name's words ("val_loss", "train/Loss", "valAcc").
_LOWER_IS_BETTER = re.compile(r"loss|error|^(err|mse|mae|rmse|nll|ppl|perplexity|wer|cer|regret|time|latency|cost)$")
_HIGHER_IS_BETTER = re.compile(r"^(acc|accuracy|f1|auc|auroc|precision|recall|score|reward|return|iou|miou|map|"
                               r"bleu|rouge|r2|dice|psnr|ssim|top1|top5)$")


def name_direction(name: str) -> Optional[str]:
    """'min' or 'max' when the metric's name says which way is better, None when it does not ('lr', 'objective')."""
    words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower())
    stems = [word if word in ("f1", "r2", "top1", "top5") else word.rstrip("0123456789") for word in words]
    if any(_LOWER_IS_BETTER.search(stem) for stem in stems):
        return "min"
    if any(_HIGHER_IS_BETTER.match(stem) for stem in stems):
        return "max"
    return None


def metric_mode(name: str, declared: Optional[str] = None, mode: Optional[str] = None) -> str:
    """'max' or 'min': which end of `name` is its best.

    1. An explicit `mode` (the user's --mode, a flipped leaderboard) wins.
    2. `declared` is the direction the sweep declared (`declared_direction`). A sweeper declares the direction
       of its objective, the task's return value: it always applies to the `result` column. A named metric
       is something else the task logged (a loss next to an accuracy), so its own name speaks first, and
       the declared direction applies to it only when the name says nothing ('objective', 'val_metric').
    3. The name rule: losses, errors, perplexities and times are lower-is-better, accuracies and scores
       higher. A `result` with no declared direction is minimized, as Optuna, Ax and Nevergrad do by default;
       any other name that says nothing is maximized.
    """
    if mode is not None:
        return mode
    if name == RESULT:
        return declared or "min"
    return name_direction(name) or declared or "max"


def best_of(summary: Mapping[str, Any], mode: str) -> Any:
    """A metric summary's best value: its "min" when `mode` (metric_mode's answer) is 'min', else its "max";
    None when the summary lacks it (a run that logged nothing of the metric)."""
    return summary.get("min") if mode == "min" else summary.get("max")


def declared_direction(sweeper: Mapping[str, Any]) -> Optional[str]:
    """The direction an optimizing sweeper's config (`hydra.sweeper`, as plain data) declares, as 'min' or 'max'.

    Optuna: `direction: minimize|maximize`, or a list for several objectives (the first one counts).
    Ax: `ax_config.experiment.minimize: bool`. Nevergrad: `optim.maximize: bool`. None for any other sweeper.
    """
    direction = sweeper.get("direction")
    if isinstance(direction, (list, tuple)):
        direction = direction[0] if direction else None
    if direction is not None:
        word = str(getattr(direction, "name", direction)).lower()  # a string, or Optuna's Direction enum
        return {"minimize": "min", "maximize": "max"}.get(word)
    experiment = (sweeper.get("ax_config") or {}).get("experiment") or {}
    if isinstance(experiment.get("minimize"), bool):
        return "min" if experiment["minimize"] else "max"
    optim = sweeper.get("optim") or {}
    if isinstance(optim.get("maximize"), bool):
        return "max" if optim["maximize"] else "min"
    return None


def shared_direction(directions: Iterable[Optional[str]]) -> Optional[str]:
    """The one direction declared among sweeps ranked together; None if none declared one or they disagree."""
    found = {d for d in directions if d}
    return found.pop() if len(found) == 1 else None


def default_metric(metric_counts: Mapping[str, int], has_result: bool, declared: Optional[str]) -> Optional[str]:
    """What a view ranks by when the user named nothing (`metric_counts`: how many runs logged each metric).

    The result, when the sweep declared which way it is better (an optimizing sweeper) or nothing else was
    logged. Otherwise the validation metric most runs logged (`val_acc` before `train_loss`): a basic sweep
    declares nothing about its return value, and ranking an accuracy it returned lowest first would show
    the worst run as the best.
    """
    if has_result and (declared or not metric_counts):
        return RESULT
    if not metric_counts:
        return None
    return max(metric_counts, key=lambda name: (name.lower().startswith(("val", "valid", "eval", "test")),
                                                metric_counts[name], name))
