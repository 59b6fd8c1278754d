"""Early stopping decided from logged curves: hyperband, median and asha on hand-built sweeps."""

from __future__ import annotations

import json
import math
import random
from typing import Optional, Sequence

import pytest

from slurmml.core.early_stop import Curve, Decision, Rule, decide, parse_rule, rule_to_dict, rungs

INF, NAN = math.inf, math.nan

# val_loss over 9 epochs of one sweep over the learning rate: fast, slow, noisy and diverging runs
SWEEP = {
    "lr=3e-2": [1.2, 0.7, 0.5, 0.42, 0.38, 0.36, 0.35, 0.345, 0.34],  # converges fast
    "lr=1e-2": [1.6, 1.0, 0.75, 0.6, 0.5, 0.45, 0.41, 0.39, 0.37],
    "lr=5e-2": [1.3, 0.9, 0.8, 0.85, 0.7, 0.72, 0.66, 0.68, 0.64],  # noisy
    "lr=3e-3": [1.9, 1.4, 1.1, 0.9, 0.75, 0.65, 0.58, 0.52, 0.48],
    "lr=1e-3": [2.1, 1.8, 1.55, 1.35, 1.2, 1.08, 0.98, 0.9, 0.84],  # slow
    "lr=3e-4": [2.2, 2.05, 1.9, 1.78, 1.67, 1.57, 1.48, 1.4, 1.33],
    "lr=1e-4": [2.28, 2.24, 2.2, 2.16, 2.12, 2.08, 2.05, 2.02, 1.99],
    "lr=1e-1": [2.3, 2.9, 4.1, 7.5, 12.0, 20.0, 33.0, 50.0, 80.0],  # diverges
    "lr=2e-1": [2.3, 3.5, 9.0, 40.0, INF, INF, INF, INF, INF],  # overflows
}


def curve(run_id: str, values: Sequence[float], *, active: bool = True, start: float = 0.0, every: float = 60.0,
          steps: Optional[Sequence[Optional[int]]] = None) -> Curve:
    """A run's curve as the tracker logs it: one value per epoch (step 1, 2, ...), `every` seconds apart."""
    steps = list(steps) if steps is not None else list(range(1, len(values) + 1))
    return Curve(run_id, active, tuple((step, float(value), start + i * every)
                                       for i, (step, value) in enumerate(zip(steps, values))))


def sweep_at(epoch: int) -> list[Curve]:
    return [curve(run_id, values[:epoch]) for run_id, values in SWEEP.items()]


def pruned(decision: Decision) -> list[str]:
    assert decision.problem is None
    return [verdict.run_id for verdict in decision.prune]


def rule(**settings) -> Rule:
    return Rule(**{"metric": "val_loss", "mode": "min", **settings})


# ---- rungs ----

def test_rungs_are_min_steps_times_powers_of_eta_deduplicated():
    assert rungs(rule(min_steps=1, eta=3), 30) == [1, 3, 9, 27]
    assert rungs(rule(min_steps=2, eta=1.5), 10) == [2, 3, 4, 6, 10]  # 2, 3, 4.5, 6.75, 10.125
    assert rungs(rule(min_steps=1, eta=1.2), 3) == [1, 2, 3]  # 1, 1.2, 1.44, 1.73 all count 1 value
    assert rungs(rule(min_steps=4), 3) == []


# ---- hyperband ----

def test_wandb_docstring_example():
    """W&B's hyperband example, counted 1-based with min_steps=1, eta=2 (rungs 1, 2, 4)."""
    curves = [curve("a", [10, 9], active=False),
              curve("b", [10, 10]),  # worst second value
              curve("c", [10, 8, 8]),  # the cut of rung 2 itself
              curve("d", [10, 7, 7]),
              curve("e", [10, 6, 6], active=False)]
    the_rule = rule(metric="loss", min_steps=1, eta=2)
    decision = decide(the_rule, curves)
    # rung 2 holds 9, 10, 8, 7, 6: sorted index int(5 / 2) = 2 is 8. Only b is worse; c ties and survives.
    assert pruned(decision) == ["b"]
    (verdict,) = decision.prune
    assert (verdict.rung, verdict.step, verdict.value, verdict.threshold, verdict.compared) == (2, 2, 10, 8, 5)
    assert verdict.reason(the_rule) == "loss 10 at step 2 (rung 2) is worse than 8, the hyperband cut of 5 runs"


@pytest.mark.parametrize("epoch, cut", [(3, 1.1), (9, 0.64)])
def test_hyperband_stops_slow_and_diverging_runs_and_keeps_the_best(epoch, cut):
    decision = decide(rule(min_steps=1, eta=3), sweep_at(epoch))
    # 9 runs at rung `epoch`: the cut is the 4th best (sorted index int(9 / 3) = 3), which itself survives
    assert pruned(decision) == ["lr=1e-1", "lr=1e-3", "lr=1e-4", "lr=2e-1", "lr=3e-4"]
    assert {verdict.threshold for verdict in decision.prune} == {cut}
    assert {verdict.rung for verdict in decision.prune} == {epoch}
    assert {verdict.compared for verdict in decision.prune} == {9}
    assert dict((v.run_id, v.value) for v in decision.prune)["lr=2e-1"] == (9.0 if epoch == 3 else INF)


def test_hyperband_judges_at_the_highest_rung_reached():
    # at epoch 8 the highest rung is 3 (rungs 1, 3, 9): epoch 3's values decide, not epoch 8's
    decision = decide(rule(min_steps=1, eta=3), sweep_at(8))
    assert {(verdict.rung, verdict.step, verdict.threshold) for verdict in decision.prune} == {(3, 3, 1.1)}


def test_hyperband_cut_is_at_sorted_index_int_n_over_eta():
    six = [curve(f"r{i}", [value]) for i, value in enumerate([0.6, 0.1, 0.5, 0.3, 0.2, 0.4])]
    # eta 3: int(6 / 3) = 2, the third best (0.3); eta 2: int(6 / 2) = 3, the fourth best (0.4)
    assert {v.threshold for v in decide(rule(eta=3), six).prune} == {0.3}
    assert pruned(decide(rule(eta=3), six)) == ["r0", "r2", "r5"]
    assert pruned(decide(rule(eta=2), six)) == ["r0", "r2"]
    assert pruned(decide(rule(eta=7), six)) == ["r0", "r2", "r3", "r4", "r5"]  # int(6 / 7) = 0: only the best


def test_a_tie_with_the_cut_survives():
    curves = [curve("a", [0.5]), curve("b", [0.5]), curve("c", [0.5]), curve("d", [0.9])]
    assert pruned(decide(rule(eta=2), curves)) == ["d"]  # cut at index 2 is 0.5: a, b, c tie with it


def test_max_mode_keeps_the_highest_accuracy_and_reports_in_the_metrics_sign():
    curves = [curve("a", [0.5, 0.7, 0.8]), curve("b", [0.4, 0.5, 0.55]),
              curve("c", [0.45, 0.6, 0.75]), curve("d", [0.3, 0.35, 0.4])]
    the_rule = Rule("val_acc", "max", min_steps=1, eta=3)
    decision = decide(the_rule, curves)
    assert pruned(decision) == ["b", "d"]  # rung 3: 0.8, 0.75, 0.55, 0.4; the cut is the 2nd best, 0.75
    assert [(v.value, v.threshold) for v in decision.prune] == [(0.55, 0.75), (0.4, 0.75)]
    assert decision.prune[1].reason(the_rule) == ("val_acc 0.4 at step 3 (rung 3) is worse than 0.75, "
                                                  "the hyperband cut of 4 runs")


def test_min_runs_counts_the_runs_at_the_rung():
    curves = [curve("a", [0.3, 0.2, 0.1]), curve("b", [0.5, 0.4, 0.3]), curve("c", [0.9, 0.8, 0.7])]
    assert pruned(decide(rule(eta=3, min_runs=4), curves)) == []
    assert pruned(decide(rule(eta=3, min_runs=3), curves)) == ["c"]
    # one more run at rung 1 only does not make rung 3 judgeable
    assert pruned(decide(rule(eta=3, min_runs=4), [*curves, curve("d", [0.4])])) == []


def test_inactive_runs_make_the_cut_but_are_never_stopped():
    finished = [curve(run_id, SWEEP[run_id], active=False) for run_id in ("lr=3e-2", "lr=1e-2", "lr=1e-1")]
    running = [curve("lr=1e-3", SWEEP["lr=1e-3"][:3]), curve("lr=3e-3", SWEEP["lr=3e-3"][:3])]
    decision = decide(rule(eta=3), finished + running)
    # rung 3: 0.5, 0.75, 1.1, 1.55, 4.1; the cut (index 1) is 0.75, so the ended divergent run is worse but stays
    assert pruned(decision) == ["lr=1e-3", "lr=3e-3"]
    assert {v.compared for v in decision.prune} == {5}
    assert decide(rule(eta=3), finished).prune == ()


LATE = [curve(run_id, values, active=False) for run_id, values in SWEEP.items()]  # a finished sweep


@pytest.mark.parametrize("name", ["hyperband", "asha"])
def test_a_late_run_is_judged_against_everyones_value_at_its_rung(name):
    # a run resubmitted after the others finished: 3 epochs, arriving long after the others reached rung 9
    slow, fast = [1.7, 1.3, 1.2], [1.0, 0.8, 0.7]
    decision = decide(rule(rule=name, eta=3), [*LATE, curve("late", slow, start=50_000)])
    (verdict,) = decision.prune  # rung 3 of 10 runs: index 3 is 1.1
    assert (verdict.run_id, verdict.rung, verdict.threshold, verdict.compared) == ("late", 3, 1.1, 10)
    assert pruned(decide(rule(rule=name, eta=3), [*LATE, curve("late", fast, start=50_000)])) == []


# early arrives at rung 3 first with a poor curve; three better runs get there after it, one at a time
EARLY = [curve("early", [2.0, 1.9, 1.8], start=0), curve("x", [1.0, 0.8, 0.6], start=1000),
         curve("y", [1.1, 0.9, 0.7], start=2000), curve("z", [1.2, 1.0, 0.9], start=3000)]


def test_hyperband_stops_an_early_run_once_better_runs_reach_its_rung():
    assert pruned(decide(rule(min_steps=3, eta=3), EARLY[:1])) == []  # alone at rung 3: it is its own cut
    decision = decide(rule(min_steps=3, eta=3), EARLY)
    assert pruned(decision) == ["early", "z"]  # rung 3: 0.6, 0.7, 0.9, 1.8: the cut is 0.7
    assert {v.threshold for v in decision.prune} == {0.7}


def test_asha_never_stops_the_first_run_at_a_rung():
    the_rule = rule(rule="asha", min_steps=3, eta=3)
    decision = decide(the_rule, EARLY)
    # early: alone when it arrived; x: cut of {early, x} is x; y: cut of 3 (index 1) is y itself;
    # z: against all 4, the cut is 0.7
    assert pruned(decision) == ["z"]
    (verdict,) = decision.prune
    assert (verdict.threshold, verdict.compared) == (0.7, 4)
    assert verdict.reason(the_rule) == ("val_loss 0.9 at step 3 (rung 3) is worse than 0.7, "
                                        "the asha cut of the 4 runs that reached rung 3 first")


def test_asha_ignores_runs_that_reached_the_rung_later():
    # b reached rung 1 before c; c is far better but came later, so b is judged against a and itself only
    curves = [curve("a", [0.5], start=0), curve("b", [0.6], start=10), curve("c", [0.1], start=20)]
    decision = decide(rule(rule="asha", eta=2), curves)
    # a: alone; b: {a, b} index 1 is b itself; c: the best of three
    assert pruned(decision) == []
    assert pruned(decide(rule(rule="hyperband", eta=2), curves)) == ["b"]  # all three: index 1 is 0.5


def test_asha_equal_times_count_as_earlier():
    curves = [curve("a", [1.0], start=60), curve("b", [2.0], start=60)]
    decision = decide(rule(rule="asha", eta=3), curves)
    assert pruned(decision) == ["b"]
    assert decision.prune[0].compared == 2


def test_asha_min_runs_counts_the_earlier_arrivals():
    curves = [curve("a", [0.1], start=0), curve("b", [0.9], start=10), curve("c", [1.0], start=20)]
    assert pruned(decide(rule(rule="asha", eta=3, min_runs=2), curves)) == ["b", "c"]
    assert pruned(decide(rule(rule="asha", eta=3, min_runs=3), curves)) == ["c"]  # b had only 2 by then
    assert pruned(decide(rule(rule="asha", eta=3, min_runs=4), curves)) == []


# ---- median ----

def test_median_stops_runs_whose_best_is_worse_than_the_others_median():
    the_rule = rule(rule="median", min_steps=1)
    decision = decide(the_rule, sweep_at(5))
    # epoch 5: 0.38, 0.5, 0.7, 0.75, 1.2, 1.67, 2.12, 12, inf. Without lr=1e-3 (1.2) the median of the other
    # 8 is (0.75 + 1.67) / 2 = 1.21, so it survives; without lr=3e-4 it is (0.75 + 1.2) / 2 = 0.975.
    assert pruned(decision) == ["lr=1e-1", "lr=1e-4", "lr=2e-1", "lr=3e-4"]
    verdict = {v.run_id: v for v in decision.prune}["lr=3e-4"]
    assert (verdict.rung, verdict.step, verdict.value, verdict.compared) == (5, 5, 1.67, 8)
    assert verdict.threshold == pytest.approx(0.975)
    assert verdict.reason(the_rule) == ("best val_loss 1.67 by step 5 (rung 5) is worse than 0.975, "
                                        "the median of 8 other runs there")


def test_median_judges_the_best_value_so_far():
    curves = [curve("a", [1.0, 0.5, 3.0]), curve("b", [1.0, 0.9, 0.8]), curve("c", [1.1, 0.95, 0.85])]
    # a's last value spiked, but its best (0.5) beats the others' median at epoch 3 (0.825)
    assert pruned(decide(rule(rule="median"), curves)) == []
    assert pruned(decide(rule(rule="hyperband", eta=3), curves)) == ["a"]  # hyperband judges the value itself


def test_median_needs_other_runs_and_min_steps():
    a, b, c = curve("a", [0.9, 0.8]), curve("b", [0.5, 0.4]), curve("c", [0.6, 0.5])
    assert pruned(decide(rule(rule="median"), [a])) == []  # nobody to compare with
    assert pruned(decide(rule(rule="median", min_runs=0), [a])) == []  # still needs one other run
    assert pruned(decide(rule(rule="median", min_runs=3), [a, b, c])) == []
    assert pruned(decide(rule(rule="median", min_runs=2), [a, b, c])) == ["a"]
    assert pruned(decide(rule(rule="median", min_steps=3), [a, b, c])) == []
    # the judged index is the run's own latest: a longer run is judged where only it has values
    assert pruned(decide(rule(rule="median"), [curve("a", [0.9, 0.8, 0.7]), b, c])) == []


# ---- problems ----

def test_runs_logging_at_different_steps_are_a_problem():
    curves = [curve("a", [1.0, 0.8, 0.7]), curve("b", [1.1, 0.9, 0.6], steps=[10, 20, 30])]
    decision = decide(rule(eta=3), curves)
    assert decision == Decision((), "early_stop: the runs log val_loss at different steps (rung 3 is step 3 for "
                                    "run a, step 30 for run b); rules compare runs at the same step")


def test_median_checks_steps_at_the_judged_index():
    curves = [curve("a", [1.0, 0.8]), curve("b", [1.1, 0.9], steps=[2, 4])]
    decision = decide(rule(rule="median"), curves)
    assert decision.prune == ()
    assert decision.problem == ("early_stop: the runs log val_loss at different steps (rung 2 is step 2 for run a, "
                                "step 4 for run b); rules compare runs at the same step")


def test_missing_steps_match_only_each_other():
    unstepped = [curve("a", [1.0], steps=[None]), curve("b", [2.0], steps=[None])]
    assert pruned(decide(rule(eta=3), unstepped)) == ["b"]
    assert decide(rule(eta=3), unstepped).prune[0].reason(rule(eta=3)) == (
        "val_loss 2 at rung 1 is worse than 1, the hyperband cut of 2 runs")
    mixed = [curve("a", [1.0], steps=[None]), curve("b", [2.0], steps=[1])]
    assert decide(rule(eta=3), mixed).problem.startswith("early_stop: the runs log val_loss at different steps "
                                                         "(rung 1 is step None for run a, step 1 for run b)")


def test_a_metric_nobody_logs_is_a_problem_when_others_are_logged():
    curves = [Curve("a", True, ()), Curve("b", False, ())]
    decision = decide(rule(metric="val_los"), curves, other_metrics=["val_acc", "loss", "loss"])
    assert decision == Decision((), "early_stop: no run logs 'val_los' (they log: loss, val_acc)")
    assert decide(rule(metric="val_los"), curves) == Decision(())  # nothing logged yet: nothing to do
    assert decide(rule(), []) == Decision(())


def test_nan_values_are_not_counted_and_infinite_ones_are():
    good = [curve("b", [1.0, 0.5], active=False), curve("c", [1.0, 0.6], active=False)]
    two_steps = rule(min_steps=2, eta=2)
    # a logged NaN at step 2: it holds one value, short of the first rung (2 values)
    assert pruned(decide(two_steps, [*good, curve("a", [3.0, NAN])])) == []
    decision = decide(two_steps, [*good, curve("a", [3.0, INF])])
    assert pruned(decision) == ["a"]
    assert decision.prune[0].value == INF
    # a NaN in a finished run does not poison the cut: rung 1 values are 1.0, 1.0, 2.0
    with_nan = [curve("b", [1.0, NAN], active=False), curve("c", [1.0], active=False), curve("a", [2.0])]
    assert decide(rule(eta=3), with_nan).prune[0].threshold == 1.0


def test_the_decision_does_not_depend_on_the_order_of_the_curves():
    mismatched = [curve("a", [1.0, 0.9, 0.8]), curve("c", [1.0, 0.9, 0.8], steps=[5, 10, 15]),
                  curve("b", [1.0, 0.9, 0.7], steps=[2, 4, 6])]
    for name in ("hyperband", "median", "asha"):
        for curves in (sweep_at(9), sweep_at(4), [*LATE, *EARLY], mismatched):
            expected = decide(rule(rule=name, eta=3), curves)
            for seed in range(5):
                shuffled = list(curves)
                random.Random(seed).shuffle(shuffled)
                assert decide(rule(rule=name, eta=3), shuffled) == expected
    assert "step 6 for run b" in decide(rule(eta=3), mismatched).problem  # the first by run id after a


# ---- settings ----

@pytest.mark.parametrize("spec, message", [
    ({"metric": "val_loss", "rule": "hyperbnd"}, "early_stop: unknown rule 'hyperbnd' (one of hyperband, median, asha)"),
    ({"metric": "val_loss", "etta": 3},
     "early_stop: unknown key 'etta' (known: metric, mode, rule, min_steps, eta, min_runs, grace_s, max_steps)"),
    ({}, "early_stop: metric is required"),
    ({"metric": " "}, "early_stop: metric is required"),
    ({"metric": "val_loss", "eta": 1}, "early_stop: eta must be a number above 1, not 1"),
    ({"metric": "val_loss", "eta": "fast"}, "early_stop: eta must be a number above 1, not 'fast'"),
    ({"metric": "val_loss", "mode": "up"}, "early_stop: unknown mode 'up' (one of min, max)"),
    ({"metric": "val_loss", "min_steps": 0}, "early_stop: min_steps must be a whole number of at least 1, not 0"),
    ({"metric": "val_loss", "min_steps": "2.5"},
     "early_stop: min_steps must be a whole number of at least 1, not '2.5'"),
    ({"metric": "val_loss", "min_steps": True}, "early_stop: min_steps must be a whole number of at least 1, not True"),
    ({"metric": "val_loss", "min_runs": -1}, "early_stop: min_runs must be a whole number of at least 0, not -1"),
    ({"metric": "val_loss", "grace_s": -5}, "early_stop: grace_s must be a number of at least 0, not -5"),
    ({"metric": "val_loss", "grace_s": "inf"}, "early_stop: grace_s must be a number of at least 0, not 'inf'"),
    ({"metric": "val_loss", "max_steps": 0}, "early_stop: max_steps must be a whole number of at least 1, not 0"),
    (["val_loss"], "early_stop: expected a mapping of settings, not list"),
])
def test_parse_rule_names_the_bad_setting(spec, message):
    with pytest.raises(ValueError) as raised:
        parse_rule(spec)
    assert str(raised.value) == message


def test_a_rule_built_directly_is_validated_too():
    with pytest.raises(ValueError, match=r"^early_stop: eta must be a number above 1, not 0.5$"):
        Rule("val_loss", "min", eta=0.5)


def test_parse_rule_accepts_numbers_from_a_command_line():
    parsed = parse_rule({"metric": "val_loss", "mode": "min", "rule": "ASHA", "min_steps": "3", "eta": "2.5",
                         "min_runs": "2", "grace_s": "30", "max_steps": "90"})
    assert parsed == Rule("val_loss", "min", "asha", min_steps=3, eta=2.5, min_runs=2, grace_s=30.0, max_steps=90)
    assert isinstance(parsed.min_steps, int) and isinstance(parsed.eta, float)
    assert rungs(parsed, 20) == [3, 7, 18]  # 3, 7.5, 18.75
    assert parse_rule({"metric": "val_loss", "max_steps": "none"}).max_steps is None


def test_parse_rule_takes_the_mode_from_the_metrics_name_or_the_declared_direction():
    assert parse_rule({"metric": "val_acc"}).mode == "max"
    assert parse_rule({"metric": "train/loss"}, declared="max").mode == "min"  # the name speaks first
    assert parse_rule({"metric": "result"}, declared="max").mode == "max"
    assert parse_rule({"metric": "result"}).mode == "min"
    assert parse_rule({"metric": "objective"}, declared="min").mode == "min"
    assert parse_rule({"metric": "val_loss", "mode": "maximize"}).mode == "max"


def test_parse_rule_refuses_a_mode_against_the_sweepers_direction():
    with pytest.raises(ValueError) as raised:
        parse_rule({"metric": "result", "mode": "max"}, declared="min")
    assert str(raised.value) == "early_stop: mode 'max' contradicts the sweeper's direction 'min' for result"
    with pytest.raises(ValueError, match="direction 'min' for objective$"):
        parse_rule({"metric": "objective", "mode": "max"}, declared="min")
    # a loss minimized while the sweeper maximizes an accuracy result is fine
    assert parse_rule({"metric": "val_loss", "mode": "min"}, declared="max").mode == "min"
    assert parse_rule({"metric": "result", "mode": "min"}, declared="min").mode == "min"


def test_rule_to_dict_round_trips_through_json():
    for original in (Rule("val_loss", "min"),
                     parse_rule({"metric": "val_acc", "rule": "median", "min_steps": "4", "eta": 2,
                                 "min_runs": 3, "grace_s": 15, "max_steps": 100})):
        data = json.loads(json.dumps(rule_to_dict(original)))
        assert parse_rule(data) == original
        assert data["metric"] == original.metric and data["max_steps"] == original.max_steps
