"""Projected final values of a metric for active runs (slurmml.core.projection), read from the registry: the one
place the runs view, the leaderboard and the report get them from."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable

from slurmml.core.projection import Projection, final_step_of, project
from slurmml.core.states import ACTIVE_STATES
from slurmml.registry.store import chunks, placeholders


def projections(conn: sqlite3.Connection, run_ids: Iterable[str], metric: str) -> dict[str, Projection]:
    """run id -> its projection, for the active runs among `run_ids` that have enough points. Each is projected
    to the step its sweep trains to: the rule's max_steps, else where the sweep's completed runs ended."""
    active = placeholders(len(ACTIVE_STATES))
    targets: list[tuple[int, str, Any]] = []
    for chunk in chunks(list(run_ids)):
        targets += conn.execute(f"SELECT run, id, sweep_id FROM runs WHERE id IN ({placeholders(len(chunk))}) "
                                f"AND state IN ({active})", (*chunk, *ACTIVE_STATES)).fetchall()
    if not targets:
        return {}
    key = conn.execute("SELECT key FROM metric_keys WHERE name = ?", (metric,)).fetchone()
    if key is None:
        return {}
    final_steps = {sweep_id: _final_step(conn, sweep_id, key[0]) for sweep_id in {t[2] for t in targets}}
    out = {}
    for run, run_id, sweep_id in targets:
        points = conn.execute("SELECT step, value FROM metrics WHERE run = ? AND key = ? ORDER BY step",
                              (run, key[0])).fetchall()
        projection = project([tuple(p) for p in points], final_steps.get(sweep_id))
        if projection is not None:
            out[run_id] = projection
    return out


def _final_step(conn: sqlite3.Connection, sweep_id: Any, key: int) -> Any:
    if sweep_id is None:
        return None
    rule = conn.execute("SELECT rule FROM early_stop WHERE sweep_id = ?", (sweep_id,)).fetchone()
    declared = json.loads(rule[0]).get("max_steps") if rule else None
    ends = [step for (step,) in conn.execute(
        "SELECT s.last_step FROM metric_summary s JOIN runs r USING (run) WHERE r.sweep_id = ? AND s.key = ? "
        "AND r.state = 'COMPLETED'", (sweep_id, key))]
    return final_step_of(ends, declared)
