"""A run's metric summaries (last, last step, min, max, count per metric): one rule for the ingest, which keeps
them as points arrive, and for executions.summarize_again, which recomputes them after points were superseded."""

from __future__ import annotations

from typing import Optional


def latest_point(seen: Optional[tuple], value: float, step: Optional[int]) -> tuple:
    """A metric's last (value, step) after one more point: the newest, unless its step went back."""
    if seen is None or step is None or seen[1] is None or step >= seen[1]:
        return (value, step)
    return seen


def summary_rows(run: int, points: list[tuple]) -> list[tuple]:
    """metric_summary rows of `points` ((run, key, step, value, time) in the order they were written)."""
    latest: dict[int, tuple] = {}
    for _, key, step, value, _ in points:
        latest[key] = latest_point(latest.get(key), value, step)
    return summaries(run, points, latest)


def summaries(run: int, points: list[tuple], latest: dict[int, tuple]) -> list[tuple]:
    """(run, key, last, last_step, min, max, count) per key; NaN counts but is left out of min and max."""
    values: dict[int, list[float]] = {key: [] for key in latest}
    for point in points:
        values[point[1]].append(point[3])
    rows = []
    for key, (last, last_step) in latest.items():
        clean = [v for v in values[key] if v is not None and v == v]  # NaN, or NULL as SQLite stores it
        rows.append((run, key, last, last_step, min(clean) if clean else None, max(clean) if clean else None,
                     len(values[key])))
    return rows


SUMMARY_UPSERT = """
    INSERT INTO metric_summary(run, key, last, last_step, min, max, count) VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT(run, key) DO UPDATE SET
      last = CASE WHEN excluded.last_step IS NULL OR last_step IS NULL OR excluded.last_step >= last_step
                  THEN excluded.last ELSE last END,
      last_step = CASE WHEN excluded.last_step IS NULL OR last_step IS NULL OR excluded.last_step >= last_step
                  THEN excluded.last_step ELSE last_step END,
      min = min(coalesce(min, excluded.min), coalesce(excluded.min, min)),
      max = max(coalesce(max, excluded.max), coalesce(excluded.max, max)),
      count = count + excluded.count"""
