"""Where a run still training is heading: the final value of a metric projected from its curve so far.

A person can then judge a run before an early-stopping rule does (the runs table, the leaderboard, the report).

The model
---------
Learning curves flatten as training goes on. `value = a + b / step` flattens the same way, has an asymptote `a`
(the value as step -> infinity) and fits a falling loss (b > 0) as well as a rising accuracy (b < 0).

1. The curve is cleaned: points whose step is None or < 1, and values that are NaN or infinite, are dropped;
   of several points at one step the last one given is kept.
2. `a` and `b` are fitted by ordinary least squares in x = 1 / step on the later half of the curve (its last
   ceil(n / 2) points, at least `MIN_POINTS`): early transients (warm-up, a first spike) say little about where
   a run ends up.
3. The projection is a + b / final_step when the step the run trains to is known, else the asymptote `a`.
4. The interval is the usual prediction interval of linear regression at x0 (1 / final_step, or 0 for the
   asymptote): half-width = z * s * sqrt(1 + 1/n + (x0 - mean x)^2 / Sxx), with s the residual standard deviation
   (n - 2 degrees of freedom) and z = 1.96. That is about 95 % only if the residuals are independent and normal,
   which a curve's noise seldom is: read it as a rough guide, not a guarantee.
5. A run already at or past final_step gets its last value with the interval of its recent noise (z * s),
   flagged `reached`.

With fewer than `MIN_POINTS` usable points, or all of them at one step (Sxx = 0), there is no projection (None).

Pure: stdlib only, no I/O.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

MIN_POINTS = 3
Z = 1.96  # two-sided ~95 % of a normal distribution
_SCIENTIFIC_BELOW = -3  # decimal exponents outside [-3, 6) read better as 1.234e-04 than as 0.0001234
_SCIENTIFIC_FROM = 6


@dataclass(frozen=True)
class Projection:
    value: float  # projected value at `at_step` (None step -> the asymptote)
    low: float
    high: float
    at_step: Optional[int]  # the step projected to; None for the asymptote
    points: int  # how many points the fit used
    reached: bool = False  # the run is already at or past at_step

    @property
    def spread(self) -> float:
        """Half the interval's width: the ± of `text`."""
        return (self.high - self.low) / 2

    def text(self, digits: int = 4) -> str:
        """Short, for a table cell: '0.4123 ±0.0210'. `digits` significant digits of the larger of the value and
        the spread (a value is not worth more digits than its uncertainty); tiny and huge numbers in e-notation."""
        digits = max(1, digits)
        exponent = _decimal_exponent(max(abs(self.value), self.spread), digits)
        if exponent is not None and not _SCIENTIFIC_BELOW <= exponent < _SCIENTIFIC_FROM:
            return f"{self.value:.{digits - 1}e} ±{self.spread:.1e}"
        decimals = max(0, digits - 1 - (exponent or 0))
        return f"{self.value:.{decimals}f} ±{self.spread:.{decimals}f}"


def _decimal_exponent(number: float, digits: int) -> Optional[int]:
    """The power of ten of `number` once rounded to `digits` significant digits (9.99996 -> 1); None for 0."""
    if number == 0:
        return None
    return int(f"{number:.{digits - 1}e}".split("e")[1])


def _value_by_step(points: Iterable[tuple[Optional[int], Optional[float]]]) -> dict[int, float]:
    """Usable points only, the last value given per step."""
    isfinite = math.isfinite  # inlined: this loop is much of a projection's time
    return {step: value for step, value in points
            if step is not None and step >= 1 and value is not None and isfinite(value)}


def project(points: Sequence[tuple[Optional[int], float]], final_step: Optional[int] = None) -> Optional[Projection]:
    """The metric's projected value at `final_step` (the asymptote when None) with its interval; None when the
    curve is too short or flat in step to fit. The model is in the module docstring."""
    if final_step is not None and final_step < 1:
        raise ValueError(f"final_step must be >= 1, got {final_step}")
    value_by_step = _value_by_step(points)
    if len(value_by_step) < MIN_POINTS:
        return None
    steps = sorted(value_by_step)  # sorting the steps alone is much cheaper than sorting (step, value) pairs
    window = [(step, value_by_step[step]) for step in steps[-max(MIN_POINTS, -(-len(steps) // 2)):]]
    fit = _fit(window)
    if fit is None:
        return None
    a, b, s, x_mean, sxx = fit
    n = len(window)
    last_step, last_value = window[-1]
    if final_step is not None and last_step >= final_step:
        noise = Z * s
        return Projection(last_value, last_value - noise, last_value + noise, final_step, n, reached=True)
    x0 = 0.0 if final_step is None else 1.0 / final_step
    value = a + b * x0
    half_width = Z * s * math.sqrt(1 + 1 / n + (x0 - x_mean) ** 2 / sxx)
    return Projection(value, value - half_width, value + half_width, final_step, n)


def _fit(window: Sequence[tuple[int, float]]) -> Optional[tuple[float, float, float, float, float]]:
    """Least squares of value on x = 1/step in one pass: (a, b, residual sd, mean x, Sxx); None when Sxx is 0.
    The sums are taken about the first point so that curves far from zero keep their precision."""
    n = len(window)
    x_ref, y_ref = 1.0 / window[0][0], window[0][1]
    sum_x = sum_y = sum_xx = sum_xy = sum_yy = 0.0
    for step, value in window:
        x = 1.0 / step - x_ref
        y = value - y_ref
        sum_x += x
        sum_y += y
        sum_xx += x * x
        sum_xy += x * y
        sum_yy += y * y
    sxx = sum_xx - sum_x * sum_x / n
    if sxx <= 0:
        return None
    sxy = sum_xy - sum_x * sum_y / n
    syy = sum_yy - sum_y * sum_y / n
    b = sxy / sxx
    x_mean, y_mean = sum_x / n + x_ref, sum_y / n + y_ref
    a = y_mean - b * x_mean
    residual_ss = max(0.0, syy - b * sxy)  # rounding can push an exact fit's residuals just below 0
    s = math.sqrt(residual_ss / (n - 2))
    return a, b, s, x_mean, sxx


def final_step_of(completed_last_steps: Sequence[Optional[int]], declared: Optional[int] = None) -> Optional[int]:
    """The step a sweep's runs train to: `declared` (a rule's max_steps) when given, else the most common last
    step of its completed runs (ties: the largest), else None (project() then goes to the asymptote)."""
    if declared is not None and declared >= 1:
        return declared
    counts = Counter(step for step in completed_last_steps if step is not None and step >= 1)
    if not counts:
        return None
    return max(counts.items(), key=lambda step_count: (step_count[1], step_count[0]))[0]
