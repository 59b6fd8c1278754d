from __future__ import annotations

import math
import random

import pytest

from slurmml.core.projection import MIN_POINTS, Projection, final_step_of, project


def hyperbola(a: float, b: float, steps: range) -> list[tuple[int, float]]:
    return [(step, a + b / step) for step in steps]


def noisy_loss(seed: int, a: float = 0.5, b: float = 20.0, sd: float = 0.01) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    return [(step, a + b / step + rng.gauss(0, sd)) for step in range(10, 501, 10)]


def test_exact_curve_recovers_asymptote_with_near_zero_interval():
    projection = project(hyperbola(0.3, 7.0, range(1, 101)))
    assert projection is not None and projection.at_step is None and not projection.reached
    assert projection.value == pytest.approx(0.3, abs=1e-9)
    assert projection.spread < 1e-9
    assert projection.low <= projection.value <= projection.high


def test_exact_curve_projects_to_final_step():
    projection = project(hyperbola(0.3, 7.0, range(1, 101)), final_step=200)
    assert projection is not None and projection.at_step == 200
    assert projection.value == pytest.approx(0.3 + 7.0 / 200, abs=1e-9)
    assert projection.spread < 1e-9


def test_exact_curve_far_from_zero_keeps_precision():
    projection = project(hyperbola(1000.0, -3.0, range(100_000, 200_001, 1000)), final_step=1_000_000)
    assert projection is not None
    assert projection.value == pytest.approx(1000.0 - 3.0 / 1_000_000, abs=1e-7)
    assert projection.spread < 1e-6


def test_noisy_loss_true_final_value_is_inside_the_interval_for_most_seeds():
    final_step, true_final = 2000, 0.5 + 20.0 / 2000
    inside = 0
    for seed in range(20):
        projection = project(noisy_loss(seed), final_step=final_step)
        assert projection is not None
        assert projection.spread < 0.1  # informative, not trivially wide
        inside += projection.low <= true_final <= projection.high
    assert inside >= 17


def test_noisy_loss_interval_widens_toward_the_asymptote():
    points = noisy_loss(0)
    near, asymptote = project(points, final_step=600), project(points)
    assert near is not None and asymptote is not None
    assert asymptote.spread > near.spread
    assert near.value > asymptote.value  # a falling loss is still above its asymptote


def test_rising_accuracy_approaches_its_ceiling_from_below():
    rng = random.Random(3)
    points = [(step, 0.9 - 50.0 / step + rng.gauss(0, 0.002)) for step in range(100, 5001, 50)]
    at_final = project(points, final_step=10_000)
    ceiling = project(points)
    assert at_final is not None and ceiling is not None
    assert at_final.low <= 0.9 - 50.0 / 10_000 <= at_final.high
    assert ceiling.low <= 0.9 <= ceiling.high
    assert at_final.value < ceiling.value
    assert at_final.value > points[-1][1] - 0.01  # still rising past the last logged value


def test_too_few_points_give_no_projection():
    assert project([]) is None
    assert project([(1, 2.0), (2, 1.5)]) is None
    assert project([(1, 2.0), (2, 1.5), (3, 1.3)]) is not None
    assert MIN_POINTS == 3


def test_all_points_at_one_step_give_no_projection():
    assert project([(5, 1.0), (5, 0.9), (5, 0.8), (5, 0.7)]) is None


def test_steps_none_and_below_one_are_dropped():
    clean = hyperbola(0.2, 4.0, range(1, 21))
    polluted = clean + [(None, 99.0), (0, -50.0), (-3, 7.0)]
    assert project(polluted, final_step=40) == project(clean, final_step=40)
    assert project([(None, 1.0), (0, 2.0), (1, 3.0), (2, 2.5)]) is None


def test_repeated_steps_keep_the_last_value():
    clean = hyperbola(0.2, 4.0, range(1, 21))
    repeated = [(step, 100.0) for step, _ in clean] + clean  # e.g. a resumed run logging the steps again
    projection = project(repeated, final_step=40)
    assert projection == project(clean, final_step=40)
    assert projection is not None and projection.points == 10


def test_nan_and_infinite_values_are_dropped():
    clean = hyperbola(0.2, 4.0, range(1, 21))
    polluted = clean[:5] + [(30, math.nan), (31, math.inf), (32, -math.inf)] + clean[5:]
    assert project(polluted) == project(clean)


def test_run_at_or_past_final_step_keeps_its_last_value():
    points = noisy_loss(1)
    last_step, last_value = points[-1]
    for final_step in (last_step, last_step - 100):
        projection = project(points, final_step=final_step)
        assert projection is not None and projection.reached and projection.at_step == final_step
        assert projection.value == last_value
        assert 0.005 < projection.spread < 0.05  # about 1.96 noise sds (0.01)
    assert not project(points, final_step=last_step + 1).reached


def test_later_half_ignores_a_wild_start():
    rng = random.Random(7)
    wild = [(step, rng.uniform(0, 10)) for step in range(1, 101)]  # a diverging warm-up
    settled = [(step, 0.5 + 20.0 / step + rng.gauss(0, 0.005)) for step in range(101, 401)]
    projection = project(wild + settled, final_step=1000)
    assert projection is not None and projection.points == 200
    assert projection.value == pytest.approx(0.5 + 20.0 / 1000, abs=0.01)
    assert projection.low <= 0.5 + 20.0 / 1000 <= projection.high


def test_final_step_below_one_is_refused():
    with pytest.raises(ValueError):
        project(hyperbola(0.2, 4.0, range(1, 21)), final_step=0)


def test_final_step_of_rules():
    assert final_step_of([100, 200, 200], declared=500) == 500  # declared wins
    assert final_step_of([100, 200, 200, None]) == 200  # most common
    assert final_step_of([100, 300, 100, 300, 50]) == 300  # ties: the largest
    assert final_step_of([None, 0]) is None
    assert final_step_of([]) is None
    assert final_step_of([None, 0], declared=0) is None  # no usable declaration


def test_text_for_a_table_cell():
    assert Projection(0.41234, 0.39134, 0.43334, None, 10).text() == "0.4123 ±0.0210"
    assert Projection(1234.5, 1222.5, 1246.5, 2000, 10).text() == "1234 ±12"
    assert Projection(0.000123, 0.000113, 0.000133, None, 10).text() == "1.230e-04 ±1.0e-05"
    assert Projection(2.5e7, 2.4e7, 2.6e7, None, 10).text() == "2.500e+07 ±1.0e+06"
    assert Projection(0.0012, -3.4988, 3.5012, None, 10).text() == "0.001 ±3.500"  # no digits beyond the spread
    assert Projection(0.41234, 0.39134, 0.43334, None, 10).text(digits=2) == "0.41 ±0.02"
