"""Registry reads for the CLI and the TUI: every run in one pass, filtered and sorted runs, one run in full,
GPU series, the leaderboard, curves, config maps.

The functions take a connection (the TUI calls them under its own lock); RunReads gives the Registry the
reads the CLI names as methods. Each returns plain Python values; nothing here writes.
Built for registries of 10,000s of runs: whole-table reads are single scans, per-run reads use indexes.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Optional

from slurmml.core.direction import RESULT, metric_mode, shared_direction
from slurmml.core.states import ACTIVE_STATES, FAILED_STATES, STOPPED_STATES
from slurmml.errors import SlurmmlError
from slurmml.registry import executions
from slurmml.registry.lineage import inputs_of
from slurmml.registry.query import RUN_COLUMNS, downsample, filters_sql, key_sql, parse_filter, parse_sort
from slurmml.registry.store import placeholders

RUN_FIELDS = ["id", "sweep_id", "job_num", "state", "slurm_job_id", "host", "exit_code", "error", "started", "ended",
              "restarts", "overrides", "run_dir", "log_path", "result"]

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
    conditions, args = filters_sql(expressions, set(metric_names(conn)))
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


BY_DATASET = "@dataset"  # the group key that ranks within each dataset version a run read (run_inputs)


def leaderboard(conn: sqlite3.Connection, metric: str, mode: Optional[str] = None, sweep: Optional[str] = None,
                group_key: Optional[str] = None, limit: int = 50,
                dataset: Optional[tuple[str, Optional[int]]] = None) -> list[dict[str, Any]]:
    """Runs ranked by the last value of `metric` (or by their `result`): in one sweep or across all, optionally
    ranked separately within each value of a shared config key (e.g. 'model'), matched exactly or as a dotted
    suffix, or with BY_DATASET within each dataset version the runs read ('digits@v2'; a run that read two is
    ranked in both). `dataset` (name, version or None) keeps only the runs that read it. Best first as
    slurmml.core.direction says unless `mode` is given; failed runs never rank."""
    mode = metric_mode(metric, sweep_direction(conn, sweep), mode)
    direction = "DESC" if mode == "max" else "ASC"
    args: list[Any] = []
    group_sql, join = "NULL", ""
    if group_key == BY_DATASET:
        join = "JOIN run_inputs i ON i.run = r.run"
        group_sql = "json_quote(i.dataset || '@v' || i.version)"
        if dataset is not None:
            join += " AND i.dataset = ?" + (" AND i.version = ?" if dataset[1] is not None else "")
            args.extend(value for value in dataset if value is not None)
            dataset = None
    elif group_key:
        match, match_args = key_sql("q.key", group_key)
        join = f"JOIN params p ON p.run = r.run AND p.key = (SELECT min(key) FROM params q WHERE q.run = r.run AND {match})"
        args.extend(match_args)
        group_sql = "p.value"
    failed = placeholders(len(FAILED_STATES))
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
    if dataset is not None:
        where += " AND r.run IN (SELECT run FROM run_inputs WHERE dataset = ?" + \
                 (" AND version = ?)" if dataset[1] is not None else ")")
        args.extend(value for value in dataset if value is not None)
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


class RunReads:
    """Registry methods for the CLI's reads (`slurmml runs`, `show`, `best`, `watch`, `report`)."""

    conn: sqlite3.Connection
    path: Path

    def metric_names(self) -> set[str]:
        return set(metric_names(self.conn))

    def sweeps(self) -> list[dict[str, Any]]:
        """Every sweep with its run counts: completed, stopped (STOPPED or PRUNED), failed (every other final
        state), active (not final)."""
        failed, active = placeholders(len(FAILED_STATES)), placeholders(len(ACTIVE_STATES))
        stopped = placeholders(len(STOPPED_STATES))
        rows = self.conn.execute(
            "SELECT s.id, s.name, s.created, s.sweep_dir, s.backend, s.direction, count(r.run) AS runs, "
            "coalesce(sum(r.state = 'COMPLETED'), 0) AS completed, "
            f"coalesce(sum(r.state IN ({stopped})), 0) AS stopped, "
            f"coalesce(sum(r.state IN ({failed})), 0) AS failed, coalesce(sum(r.state IN ({active})), 0) AS active "
            "FROM sweeps s LEFT JOIN runs r ON r.sweep_id = s.id GROUP BY s.id ORDER BY s.created",
            (*STOPPED_STATES, *FAILED_STATES, *ACTIVE_STATES))
        return [dict(row) for row in rows]

    def sweep_direction(self, sweep: Optional[str] = None) -> Optional[str]:
        """The direction `sweep` declared (or, without one, that all declaring sweeps agree on): slurmml.core.direction."""
        return sweep_direction(self.conn, sweep)

    def has_sweep(self, sweep_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sweeps WHERE id = ?", (sweep_id,)).fetchone() is not None

    def _check_filter_keys(self, where: Iterable[str], sweep: Optional[str]) -> None:
        """A filter on a key that no run in scope has (no config key, metric or run column of that name) is
        a typo, not an empty answer. A key some runs have is fine, whether or not any of them matches."""
        for text in where:
            key = parse_filter(text).key
            if key in RUN_COLUMNS:
                continue
            scope, args = ("r.sweep_id = ? AND ", [sweep]) if sweep else ("", [])
            match, match_args = key_sql("p.key", key)
            found = self.conn.execute(
                f"SELECT 1 FROM runs r WHERE {scope}(EXISTS (SELECT 1 FROM params p WHERE p.run = r.run AND "
                f"{match}) OR EXISTS (SELECT 1 FROM metric_summary s JOIN metric_keys k "
                f"USING (key) WHERE s.run = r.run AND k.name = ?)) LIMIT 1", [*args, *match_args, key]).fetchone()
            if found is None:
                scope_words = f" in sweep {sweep}" if sweep else ""
                raise SlurmmlError(f"filter {text!r}: no run{scope_words} has a config key, metric or column '{key}'")

    def runs(self, sweep: Optional[str] = None, where: Iterable[str] = (), sort: Optional[str] = None,
             limit: Optional[int] = None, metrics: Optional[list[str]] = None) -> list[dict[str, Any]]:
        """Runs with the last value of each metric; filters are parsed and bound, never pasted into SQL."""
        names = self.metric_names()
        conditions, args = filters_sql(where, names)
        self._check_filter_keys(where, sweep)
        if sweep:
            conditions.append("r.sweep_id = ?")
            args.append(sweep)
        order = "r.sweep_id, r.job_num"
        if sort:
            key, descending = parse_sort(sort)
            if descending is None:  # no sign: a metric or the result best first, anything else ascending
                ranked = key == RESULT or (key in names and key not in RUN_COLUMNS)
                descending = ranked and metric_mode(key, self.sweep_direction(sweep)) == "max"
            direction = "DESC" if descending else "ASC"
            if key == RESULT:
                order = f"r.result IS NULL, r.result {direction}"
            elif key in RUN_COLUMNS or key in {"started", "ended"}:
                order = f"r.{key} {direction}"
            elif key in names:
                order = (f"(SELECT s.last FROM metric_summary s JOIN metric_keys k USING (key) "
                         f"WHERE s.run = r.run AND k.name = ?) IS NULL, "
                         f"(SELECT s.last FROM metric_summary s JOIN metric_keys k USING (key) "
                         f"WHERE s.run = r.run AND k.name = ?) {direction}")
                args.extend([key, key])
            else:
                raise SlurmmlError(f"cannot sort by {key!r}: not a run column nor a logged metric "
                                   f"({', '.join(sorted(names)) or 'none logged yet'})")
        sql = (f"SELECT r.run, {', '.join('r.' + f for f in RUN_FIELDS)} FROM runs r "
               f"{'WHERE ' + ' AND '.join(conditions) if conditions else ''} ORDER BY {order}")
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = [dict(row) for row in self.conn.execute(sql, args)]
        self._attach_summaries(rows, metrics)
        return rows

    def _attach_summaries(self, rows: list[dict[str, Any]], metrics: Optional[list[str]]) -> None:
        by_run = {row["run"]: row for row in rows}
        if not by_run:
            return
        sql = "SELECT s.run, k.name, s.last FROM metric_summary s JOIN metric_keys k USING (key)"
        args: list[Any] = []
        if len(by_run) < 900:
            sql += f" WHERE s.run IN ({placeholders(len(by_run))})"
            args = list(by_run)
        for run, name, last in self.conn.execute(sql, args):
            if run in by_run and (metrics is None or name in metrics) and name not in RUN_FIELDS:
                by_run[run][name] = last
        for row in rows:
            row["overrides"] = " ".join(json.loads(row["overrides"] or "[]"))
            del row["run"]

    def run(self, run_id: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise SlurmmlError(f"no run {run_id!r} in {self.path}")
        run = dict(row)
        key = run.pop("run")
        for field in ("overrides", "config", "environment"):
            run[field] = json.loads(run[field]) if run[field] else None
        run["states"] = [dict(r) for r in self.conn.execute(
            "SELECT state, time, source FROM run_states WHERE run = ? ORDER BY time, rowid", (key,))]
        run["metrics"] = {r["name"]: {k: r[k] for k in ("last", "last_step", "min", "max", "count")}
                          for r in self.conn.execute(
                              "SELECT k.name, s.* FROM metric_summary s JOIN metric_keys k USING (key) WHERE s.run = ?",
                              (key,))}
        run["artifacts"] = [dict(r) for r in self.conn.execute(
            "SELECT name, path, size, time, digest, uri, upload FROM artifacts WHERE run = ?", (key,))]
        run["inputs"] = inputs_of(self.conn, key)
        run["params"] = self._logged_params(key)
        run["executions"] = executions.of_run(self.conn, run_id)
        run["direction"] = self.sweep_direction(run["sweep_id"]) if run["sweep_id"] else None
        return run

    def _logged_params(self, key: int) -> dict[str, Any]:
        """What the run gave `slurmml.log_params`, also where its config has the same value."""
        return {name: json.loads(value) for name, value in self.conn.execute(
            "SELECT key, value FROM params WHERE run = ? AND logged ORDER BY key", (key,))}

    def run_with_sweep(self, run_id: str) -> dict[str, Any]:
        """One run's row (no metrics) with its sweep's owner, backend, cwd, sweep_dir, argv and launcher config.

        What the run actions need; plain-script runs (no sweep) have None for the sweep's fields.
        """
        row = self.conn.execute(
            "SELECT r.id, r.sweep_id, r.job_num, r.state, r.slurm_job_id, r.spool_path, r.log_path, r.overrides, "
            "r.parent_id, r.restarts, r.host, r.pid, s.user AS owner, s.backend, s.cwd, s.sweep_dir, s.argv, s.launcher, "
            "EXISTS (SELECT 1 FROM synced_runs y WHERE y.run_id = r.id) AS synced "
            "FROM runs r LEFT JOIN sweeps s ON s.id = r.sweep_id WHERE r.id = ?", (run_id,)).fetchone()
        if row is None:
            raise SlurmmlError(f"no run {run_id!r} in {self.path}")
        run = dict(row)
        for field in ("overrides", "argv", "launcher"):
            run[field] = json.loads(run[field]) if run[field] else None
        return run

    def best(self, metric: str, mode: Optional[str] = None, sweep: Optional[str] = None, limit: int = 20) -> list[dict]:
        """The leaderboard (the one ranking query, `leaderboard`) of one sweep or all, best first."""
        return leaderboard(self.conn, metric, mode, sweep, limit=limit)

    def curves(self, run_ids: list[str], metric: str, max_points: int = 500) -> dict[str, list[tuple]]:
        """run id -> its downsampled (step, value) points of `metric`."""
        out = {}
        for run_id in run_ids:
            points = self.conn.execute(
                "SELECT m.step, m.value FROM metrics m JOIN runs r USING (run) JOIN metric_keys k USING (key) "
                "WHERE r.id = ? AND k.name = ? ORDER BY m.step", (run_id, metric)).fetchall()
            out[run_id] = downsample([tuple(p) for p in points], max_points)
        return out
