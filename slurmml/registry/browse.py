"""Registry reads for interactive views: every run in one pass, GPU series, leaderboards, config maps.

Each function takes a connection and returns plain Python values; nothing here writes.
Built for registries of 10,000s of runs: whole-table reads are single scans, per-run reads use indexes.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable, Optional

from slurmml.core.direction import RESULT, metric_mode, shared_direction
from slurmml.registry.query import downsample, filters_sql, key_sql
from slurmml.core.states import FAILED_STATES

RUN_LIST_SQL = """
SELECT r.run, r.id, r.sweep_id, r.job_num, r.state, r.slurm_job_id, r.host, r.created, r.started, r.ended,
       r.restarts, r.overrides, r.parent_id, s.user, s.name, r.result, s.direction
FROM runs r LEFT JOIN sweeps s ON s.id = r.sweep_id
ORDER BY r.created, r.sweep_id, r.job_num
"""


def run_list(conn: sqlite3.Connection) -> list[tuple]:
    """(run key, id, sweep id, job num, state, job id, host, created, started, ended, restarts,
    overrides as one string, parent id, owner, sweep name, result, the sweep's declared direction) for every
    run, oldest first."""
    rows = []
    for row in conn.execute(RUN_LIST_SQL):
        row = tuple(row)
        overrides = " ".join(json.loads(row[11])) if row[11] else ""
        rows.append(row[:11] + (overrides,) + row[12:])
    return rows


def metric_summaries(conn: sqlite3.Connection) -> dict[int, dict[str, tuple]]:
    """run key -> metric name -> (last, min, max): one scan of metric_summary."""
    names = dict(conn.execute("SELECT key, name FROM metric_keys").fetchall())
    out: dict[int, dict[str, tuple]] = {}
    for run, key, last, low, high in conn.execute("SELECT run, key, last, min, max FROM metric_summary"):
        out.setdefault(run, {})[names[key]] = (last, low, high)
    return out


def metric_names(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT name FROM metric_keys ORDER BY key")]


def has_results(conn: sqlite3.Connection) -> bool:
    """Whether any run recorded a result (its task's numeric return value)."""
    return conn.execute("SELECT 1 FROM runs WHERE result IS NOT NULL LIMIT 1").fetchone() is not None


def sweep_direction(conn: sqlite3.Connection, sweep: Optional[str] = None) -> Optional[str]:
    """The direction `sweep` declared, or without one the one all declaring sweeps agree on (slurmml.core.direction)."""
    sql, args = ("SELECT direction FROM sweeps WHERE id = ?", (sweep,)) if sweep else \
        ("SELECT DISTINCT direction FROM sweeps", ())
    return shared_direction(row[0] for row in conn.execute(sql, args))


def live_gpu_util(conn: sqlite3.Connection) -> dict[int, float]:
    """run key -> mean GPU utilization of its latest samples, for running runs only (indexed per run)."""
    out = {}
    for (run,) in conn.execute("SELECT run FROM runs WHERE state = 'RUNNING'").fetchall():
        latest = conn.execute("SELECT max(time) FROM system_samples WHERE run = ?", (run,)).fetchone()[0]
        if latest is None:
            continue
        mean = conn.execute("SELECT avg(util) FROM system_samples WHERE run = ? AND time >= ? - 1",
                            (run, latest)).fetchone()[0]
        if mean is not None:
            out[run] = mean
    return out


def matching_run_ids(conn: sqlite3.Connection, expressions: Iterable[str]) -> set[str]:
    """Ids of runs matching every expression ('lr<0.01', 'model=mlp', 'val_acc>0.9', 'state=FAILED')."""
    names = {row[0] for row in conn.execute("SELECT name FROM metric_keys")}
    conditions, args = filters_sql(expressions, names)
    where = " AND ".join(conditions) or "1"
    return {row[0] for row in conn.execute(f"SELECT r.id FROM runs r WHERE {where}", args)}


def gpu_series(conn: sqlite3.Connection, run_id: str, max_points: int = 400) -> dict[str, list[float]]:
    """The run's GPU samples averaged over its GPUs per sample time: utilization % and memory used %."""
    rows = conn.execute(
        "SELECT s.time, avg(s.util), sum(s.mem_used), sum(s.mem_total) FROM system_samples s JOIN runs r USING (run) "
        "WHERE r.id = ? GROUP BY round(s.time) ORDER BY s.time", (run_id,)).fetchall()
    rows = downsample(rows, max_points)
    util = [u for _, u, _, _ in rows if u is not None]
    memory = [100.0 * used / total for _, _, used, total in rows if used is not None and total]
    return {"util": util, "memory": memory}


def config_maps(conn: sqlite3.Connection, run_ids: list[str]) -> list[dict[str, Any]]:
    """Each run's flattened config (params table), in the order of run_ids."""
    out = []
    for run_id in run_ids:
        out.append({key: json.loads(value) for key, value in conn.execute(
            "SELECT p.key, p.value FROM params p JOIN runs r USING (run) WHERE r.id = ? ORDER BY p.key", (run_id,))})
    return out


def leaderboard(conn: sqlite3.Connection, metric: str, mode: Optional[str] = None, sweep: Optional[str] = None,
                group_key: Optional[str] = None, limit: int = 50) -> list[dict[str, Any]]:
    """Runs ranked by the last value of `metric` (or by their `result`): in one sweep or across all, optionally
    ranked separately within each value of a shared config key (e.g. 'dataset'), matched exactly or as a
    dotted suffix. Best first as slurmml.core.direction says unless `mode` is given; failed runs never rank."""
    mode = metric_mode(metric, sweep_direction(conn, sweep), mode)
    direction = "DESC" if mode == "max" else "ASC"
    args: list[Any] = []
    group_sql, join = "NULL", ""
    if group_key:
        match, match_args = key_sql("q.key", group_key)
        join = f"JOIN params p ON p.run = r.run AND p.key = (SELECT min(key) FROM params q WHERE q.run = r.run AND {match})"
        args.extend(match_args)
        group_sql = "p.value"
    failed = ",".join("?" * len(FAILED_STATES))
    if metric == RESULT:
        value, step, source = "r.result", "NULL", "runs r"
        where = f"r.result IS NOT NULL AND r.state NOT IN ({failed})"
        args.extend(FAILED_STATES)
    else:
        value, step, source = "s.last", "s.last_step", "metric_summary s JOIN metric_keys k USING (key) JOIN runs r USING (run)"
        where = f"k.name = ? AND s.last IS NOT NULL AND r.state NOT IN ({failed})"  # NaN is NULL: never ranks
        args.extend([metric, *FAILED_STATES])
    if sweep:
        where += " AND r.sweep_id = ?"
        args.append(sweep)
    sql = (f"SELECT * FROM (SELECT r.id, r.sweep_id, r.job_num, r.state, r.overrides, {value} AS value, "
           f"{step} AS step, {group_sql} AS grp, "
           f"row_number() OVER (PARTITION BY {group_sql} ORDER BY {value} {direction}) AS rank "
           f"FROM {source} {join} WHERE {where}) "
           f"WHERE rank <= ? ORDER BY grp, rank")
    args.append(int(limit))
    rows = []
    for row in conn.execute(sql, args):
        item = dict(zip(("id", "sweep_id", "job_num", "state", "overrides", "value", "step", "group", "rank"), row))
        item["overrides"] = " ".join(json.loads(item["overrides"] or "[]"))
        item["group"] = json.loads(item["group"]) if item["group"] is not None else None
        rows.append(item)
    return rows


def config_key_exists(conn: sqlite3.Connection, key: str) -> bool:
    """Whether any run has this config key, exactly or as a dotted suffix (as leaderboard's group_key matches)."""
    match, args = key_sql("key", key)
    return conn.execute(f"SELECT 1 FROM params WHERE {match} LIMIT 1", args).fetchone() is not None


def data_version(conn: sqlite3.Connection) -> tuple[int, int]:
    """Changes by other connections (PRAGMA data_version) and by this one (total_changes): a cheap
    'has anything changed since I last looked' for views that refresh on a timer."""
    return conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes
