"""The registry's API for login-node code: record sweeps and runs, ingest spools, query runs."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from slurmml.errors import SlurmmlError
from slurmml.core.direction import RESULT, metric_mode
from slurmml.registry import ingest as _ingest
from slurmml.registry.query import RUN_COLUMNS, downsample, filters_sql, key_sql, parse_filter, parse_sort
from slurmml.registry.store import connect, default_registry_path
from slurmml.core.states import ACTIVE_STATES, FAILED_STATES, FINAL_STATES
from slurmml.tracking.secrets import mask_argv, mask_overrides

RUN_FIELDS = ["id", "sweep_id", "job_num", "state", "slurm_job_id", "host", "exit_code", "error", "started", "ended",
              "restarts", "overrides", "run_dir", "log_path", "result"]


class Registry:
    def __init__(self, path: Optional[Path] = None, *, create: bool = True) -> None:
        self.path = Path(path) if path is not None else default_registry_path()
        self.conn: sqlite3.Connection = connect(self.path, create=create)
        self.conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing (login node only) -------------------------------------------------------------
    def _transaction(self):
        return _Transaction(self.conn)

    def add_sweep(self, sweep: dict[str, Any], runs: Iterable[dict[str, Any]]) -> None:
        """Record a sweep and its runs before any job starts (state SUBMITTING).

        A sweep already recorded is kept as it is: this also adds runs (a clone, with its `parent_id`) to it.
        Secret-looking values in the command line and the overrides are masked here, whoever records them.
        """
        now = time.time()
        argv = mask_argv(sweep["argv"]) if sweep.get("argv") is not None else None
        with self._transaction():
            self.conn.execute(
                "INSERT OR IGNORE INTO sweeps(id, name, user, created, argv, cwd, sweep_dir, backend, git_commit, "
                "git_dirty, git_diff, launcher, direction) VALUES (:id, :name, :user, :created, :argv, :cwd, "
                ":sweep_dir, :backend, :git_commit, :git_dirty, :git_diff, :launcher, :direction)",
                {**{k: None for k in ("name", "user", "created", "cwd", "sweep_dir", "backend", "git_commit", "git_dirty",
                                       "git_diff", "direction")},
                 **sweep, "argv": json.dumps(argv), "launcher": json.dumps(sweep.get("launcher"))},
            )
            self.conn.executemany(
                "INSERT INTO runs(id, sweep_id, job_num, overrides, spool_path, log_path, parent_id, state, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'SUBMITTING', ?)",
                [(r["id"], sweep["id"], r["job_num"], json.dumps(mask_overrides(r.get("overrides", []))),
                  r.get("spool_path"), r.get("log_path"), r.get("parent_id"), now) for r in runs],
            )

    def mark_queued(self, job_ids: dict[str, tuple[str, str]]) -> None:
        """run id -> (Slurm job id, log path) once sbatch has answered."""
        now = time.time()
        with self._transaction():
            for run_id, (job_id, log_path) in job_ids.items():
                self.conn.execute("UPDATE runs SET slurm_job_id = ?, log_path = ?, state = 'QUEUED' "
                                  "WHERE id = ? AND state = 'SUBMITTING'", (job_id, log_path, run_id))
                self.conn.execute("INSERT INTO run_states(run, state, time, source) "
                                  "SELECT run, 'QUEUED', ?, 'launcher' FROM runs WHERE id = ?", (now, run_id))

    def mark_final(self, states: dict[str, tuple[str, str]], source: str) -> None:
        """run id -> (final state, reason), for runs that have not reached a final state of their own."""
        now = time.time()
        final = ",".join(f"'{state}'" for state in FINAL_STATES)
        with self._transaction():
            for run_id, (state, reason) in states.items():
                changed = self.conn.execute(
                    f"UPDATE runs SET state = ?, error = ?, ended = coalesce(ended, ?) WHERE id = ? "
                    f"AND state NOT IN ({final})", (state, reason, now, run_id)).rowcount
                if changed:
                    self.conn.execute("INSERT INTO run_states(run, state, time, source) "
                                      "SELECT run, ?, ?, ? FROM runs WHERE id = ?", (state, now, source, run_id))

    def mark_requeued(self, run_id: str, source: str = "user") -> None:
        """After `scontrol requeue` answered: the run is QUEUED again, and the shared poller follows it again.

        Its end (ended, error, exit code) is cleared; `started` stays, so the rerun's start record counts as a
        restart when it is ingested. The cached Slurm record of its job goes: it describes the execution that
        ended, and the poller would settle the run back to that state before squeue saw the job again.
        """
        now = time.time()
        with self._transaction():
            row = self.conn.execute("SELECT slurm_job_id FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise SlurmmlError(f"no run {run_id!r} in {self.path}")
            self.conn.execute("UPDATE runs SET state = 'QUEUED', ended = NULL, error = NULL, exit_code = NULL "
                              "WHERE id = ?", (run_id,))
            self.conn.execute("INSERT INTO run_states(run, state, time, source) "
                              "SELECT run, 'QUEUED', ?, ? FROM runs WHERE id = ?", (now, source, run_id))
            if row[0]:
                self.conn.execute("DELETE FROM slurm_jobs WHERE job_id = ?", (row[0],))

    def next_job_num(self, sweep_id: str) -> int:
        """The job number a run added to this sweep gets: one more than the largest so far."""
        row = self.conn.execute("SELECT max(job_num) FROM runs WHERE sweep_id = ?", (sweep_id,)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def discard_runs(self, sweep_id: str, run_ids: list[str]) -> None:
        """Forget runs whose submission failed, and their sweep if nothing else is left in it."""
        with self._transaction():
            self.conn.executemany("DELETE FROM runs WHERE id = ?", [(r,) for r in run_ids])
            self.conn.execute("DELETE FROM sweeps WHERE id = ? AND NOT EXISTS "
                              "(SELECT 1 FROM runs WHERE sweep_id = ?)", (sweep_id, sweep_id))

    def ingest(self, sweep_id: Optional[str] = None, recent_s: Optional[float] = None) -> _ingest.IngestReport:
        return _ingest.ingest(self.conn, sweep_id, recent_s)

    def ingest_one(self, run_id: str) -> _ingest.IngestReport:
        """Read one run's new spool lines (before acting on it: its state must be current)."""
        row = self.conn.execute("SELECT run, spool_path FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or not row[1]:
            return _ingest.IngestReport()
        return _ingest.ingest_run(self.conn, row[0], row[1])

    def refresh(self, local_runs_dir: Optional[Path] = None, recent_s: Optional[float] = None) -> _ingest.IngestReport:
        """What every view does first: adopt plain-script runs, ingest spools (all, or with `recent_s` only
        those of runs active or ended lately), end local runs whose process died."""
        if local_runs_dir is not None:
            self.adopt_local_runs(local_runs_dir)
        report = self.ingest(recent_s=recent_s)
        self.end_dead_local_runs()
        return report

    def adopt_local_runs(self, runs_dir: Path) -> int:
        """Register runs that `slurmml.log` started outside slurmml ($SLURMML_HOME/runs/<id>/spool.jsonl)."""
        if not runs_dir.is_dir():
            return 0
        known = {row[0] for row in self.conn.execute("SELECT id FROM runs WHERE sweep_id IS NULL")}
        new = [(d.name, str(d / "spool.jsonl"), str(d), d.stat().st_mtime) for d in runs_dir.iterdir()
               if d.name not in known and (d / "spool.jsonl").is_file()]
        with self._transaction():
            self.conn.executemany("INSERT OR IGNORE INTO runs(id, overrides, spool_path, run_dir, state, created) "
                                  "VALUES (?, '[]', ?, ?, 'RUNNING', ?)", new)
        return len(new)

    def end_dead_local_runs(self) -> None:
        """A local run on this host whose process is gone and that never wrote its end is LOST, not RUNNING."""
        import socket

        host = socket.gethostname()
        dead = {}
        for run_id, pid in self.conn.execute(
                "SELECT id, pid FROM runs WHERE sweep_id IS NULL AND state = 'RUNNING' AND host = ? AND pid IS NOT NULL",
                (host,)):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                dead[run_id] = ("LOST", f"process {pid} on {host} ended without recording its end")
            except PermissionError:
                pass  # alive, someone else's
        if dead:
            self.mark_final(dead, source="registry")

    def store_job_records(self, records: Iterable[Any]) -> None:
        """The poller's results: upsert Slurm's view of each job (JobRecord) into the cache every view reads."""
        from dataclasses import astuple

        from slurmml.slurm.accounting import JOB_RECORD_COLUMNS

        columns = ", ".join(f'"{c}"' for c in JOB_RECORD_COLUMNS)
        marks = ", ".join("?" * len(JOB_RECORD_COLUMNS))
        with self._transaction():
            self.conn.executemany(f"INSERT OR REPLACE INTO slurm_jobs({columns}) VALUES ({marks})",
                                  [astuple(r) for r in records])

    def job_records(self, job_ids: Optional[Iterable[str]] = None) -> dict[str, Any]:
        from slurmml.slurm.accounting import JOB_RECORD_COLUMNS, JobRecord

        sql = "SELECT " + ", ".join(f'"{c}"' for c in JOB_RECORD_COLUMNS) + " FROM slurm_jobs"
        rows = self.conn.execute(sql).fetchall()
        wanted = set(job_ids) if job_ids is not None else None
        return {row[0]: JobRecord(*row) for row in rows if wanted is None or row[0] in wanted}

    # -- reading -------------------------------------------------------------------------------
    def metric_names(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT name FROM metric_keys")}

    def sweeps(self) -> list[dict[str, Any]]:
        """Every sweep with its run counts: completed, failed (every other final state), active (not final)."""
        failed, active = ",".join("?" * len(FAILED_STATES)), ",".join("?" * len(ACTIVE_STATES))
        rows = self.conn.execute(
            "SELECT s.id, s.name, s.created, s.sweep_dir, s.backend, s.direction, count(r.run) AS runs, "
            "coalesce(sum(r.state = 'COMPLETED'), 0) AS completed, "
            f"coalesce(sum(r.state IN ({failed})), 0) AS failed, coalesce(sum(r.state IN ({active})), 0) AS active "
            "FROM sweeps s LEFT JOIN runs r ON r.sweep_id = s.id GROUP BY s.id ORDER BY s.created",
            (*FAILED_STATES, *ACTIVE_STATES))
        return [dict(row) for row in rows]

    def sweep_direction(self, sweep: Optional[str] = None) -> Optional[str]:
        """The direction `sweep` declared (or, without one, that all declaring sweeps agree on): slurmml.core.direction."""
        from slurmml.registry.browse import sweep_direction

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
        placeholders = ",".join("?" * len(by_run)) if len(by_run) < 900 else None
        sql = "SELECT s.run, k.name, s.last FROM metric_summary s JOIN metric_keys k USING (key)"
        args: list[Any] = []
        if placeholders:
            sql += f" WHERE s.run IN ({placeholders})"
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
            "SELECT name, path, size, time FROM artifacts WHERE run = ?", (key,))]
        run["params"] = self._logged_params(key)
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
            "r.parent_id, r.restarts, r.host, r.pid, s.user AS owner, s.backend, s.cwd, s.sweep_dir, s.argv, s.launcher "
            "FROM runs r LEFT JOIN sweeps s ON s.id = r.sweep_id WHERE r.id = ?", (run_id,)).fetchone()
        if row is None:
            raise SlurmmlError(f"no run {run_id!r} in {self.path}")
        run = dict(row)
        for field in ("overrides", "argv", "launcher"):
            run[field] = json.loads(run[field]) if run[field] else None
        return run

    def best(self, metric: str, mode: Optional[str] = None, sweep: Optional[str] = None, limit: int = 20) -> list[dict]:
        """A leaderboard: runs ranked by the last value of `metric` (or by their `result`), best first, the way
        slurmml.core.direction says unless `mode` is given. Runs that failed are never among the best (browse.leaderboard)."""
        from slurmml.registry.browse import leaderboard

        return leaderboard(self.conn, metric, mode, sweep, limit=limit)

    def curves(self, run_ids: list[str], metric: str, max_points: int = 500) -> dict[str, list[tuple]]:
        out = {}
        for run_id in run_ids:
            points = self.conn.execute(
                "SELECT m.step, m.value FROM metrics m JOIN runs r USING (run) JOIN metric_keys k USING (key) "
                "WHERE r.id = ? AND k.name = ? ORDER BY m.step", (run_id, metric)).fetchall()
            out[run_id] = downsample([tuple(p) for p in points], max_points)
        return out


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")
