"""Ingest run spools into the registry: incremental (byte offsets), idempotent, tolerant.

Each run is ingested in one write transaction that reads the run's offset, applies the new
whole lines and moves the offset on: two login-node processes ingesting at once take turns
and never add a record twice. A torn last line waits for its rest; a corrupt line is
recorded in ingest_problems and skipped.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Optional

from slurmml.core.config import flatten
from slurmml.core.states import FINAL_STATES
from slurmml.registry import controls, executions
from slurmml.registry.summary import SUMMARY_UPSERT, summaries
from slurmml.registry.store import chunks, placeholders, transaction
from slurmml.tracking.spool import parse_chunk

READ_LIMIT = 64 * 1024 * 1024  # bytes per run per pass: bounded memory on huge spools


@dataclass
class IngestReport:
    runs: int = 0
    records: int = 0
    points: int = 0
    problems: list[str] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.problems = self.problems or []


def _number(value: Any) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Keys:
    """metric name -> integer key, created on first sight."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.ids = dict((name, key) for key, name in conn.execute("SELECT key, name FROM metric_keys"))

    def __call__(self, name: str) -> int:
        key = self.ids.get(name)
        if key is None:
            self.conn.execute("INSERT OR IGNORE INTO metric_keys(name) VALUES (?)", (name,))
            key = self.conn.execute("SELECT key FROM metric_keys WHERE name = ?", (name,)).fetchone()[0]
            self.ids[name] = key
        return key


def _apply(conn: sqlite3.Connection, run: int, records: list[dict], keys: _Keys) -> int:
    points: list[tuple] = []
    add = points.append
    known = keys.ids
    latest: dict[int, tuple] = {}  # key -> (value, step) of the highest step seen
    stored = 0
    when = None
    for record in records:
        kind = record.get("k")
        when = record.get("t")
        if kind == "m":  # the hot path: keep it tight
            step = record.get("s")
            for name, value in (record.get("v") or {}).items():
                if type(value) is not float:
                    value = _number(value)
                    if value is None:
                        continue
                key = known.get(name) or keys(name)
                add((run, key, step, value, when))
                seen = latest.get(key)
                if seen is None or step is None or seen[1] is None or step >= seen[1]:  # summary.latest_point's rule, inline: the hot path
                    latest[key] = (value, step)
        elif kind == "p":  # slurmml.log_params: marked logged, over a config value of the same key
            conn.executemany(
                "INSERT OR REPLACE INTO params(run, key, value, num, type, logged) VALUES (?, ?, ?, ?, ?, 1)",
                [(run, k, json.dumps(v), _number(v) if not isinstance(v, str) else None, type(v).__name__)
                 for k, v in flatten(record.get("v") or {})],
            )
        elif kind == "gpu":
            conn.execute(
                "INSERT INTO system_samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run, when, record.get("gpu"), record.get("uuid"), record.get("util"), record.get("mem_used"),
                 record.get("mem_total"), record.get("power"), record.get("temp")),
            )
        elif kind == "a":
            conn.execute("INSERT INTO artifacts(run, name, path, size, time, digest, uri, upload) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (run, record.get("name"), record.get("path"), record.get("size"), when, record.get("digest"),
                          record.get("uri"), record.get("upload")))
        elif kind == "upload":  # an artifact's background upload ended (tracking/artifacts.py)
            # only the pending row it answers: `logged` is its `a` record's time (a path logged again is another row)
            conn.execute("UPDATE artifacts SET upload = ?, uri = coalesce(?, uri), digest = coalesce(?, digest) "
                         "WHERE run = ? AND path = ? AND upload = 'pending' AND (? IS NULL OR time = ?)",
                         (record.get("upload"), record.get("uri"), record.get("digest"), run, record.get("path"),
                          record.get("logged"), record.get("logged")))
        elif kind == "config" and isinstance(record.get("config"), dict):  # known only once the task ran (script runs)
            conn.execute("UPDATE runs SET config = ? WHERE run = ?", (json.dumps(record["config"]), run))
            _store_config_params(conn, run, record["config"])
        elif kind == "input":  # slurmml.dataset(...): the exact version the run read
            conn.execute("INSERT OR IGNORE INTO run_inputs(run, dataset, version, digest, time, fetched) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (run, record.get("dataset"), record.get("version"), record.get("digest"), when,
                          1 if record.get("fetched") else 0))
        elif kind == "start":
            _on_start(conn, run, record)
        elif kind == "control":  # the job's answer to a live control (slurmml.tracking.controls)
            controls.answer(conn, run, record)
        elif kind == "end":
            result = record.get("result")  # the task's numeric return value, when it had one
            state = record.get("state") or "COMPLETED"
            pruned = _pruned_here(conn, run)  # the early-stopping round cancelled it: the TERM's end is not its outcome
            if pruned:
                state = "PRUNED"
            _set_state(conn, run, state, when, "run",
                       **({} if pruned else {"exit_code": record.get("exit_code"), "error": record.get("error")}),
                       ended=when,
                       max_rss_mb=record.get("max_rss_mb") if _is_number(record.get("max_rss_mb")) else None,
                       **({"result": result} if _is_number(result) else {}))
            executions.on_end(conn, run, state, when)
        elif kind == "resume":  # the points before it are stored first: only they can be superseded
            stored += _store_points(conn, run, points, latest)
            points, latest = [], {}
            add = points.append
            executions.on_resume(conn, run, record.get("step"))
        elif kind == "requeue":
            executions.on_requeue(conn, run, record)
            _set_state(conn, run, "QUEUED", when, f"requeue ({record.get('reason') or 'signal'})")
        elif kind == "requeue_refused":
            executions.on_requeue_refused(conn, run)
            _set_state(conn, run, "RUNNING", when, "requeue refused")
    executions.seen(conn, run, when if _is_number(when) else None)
    return stored + _store_points(conn, run, points, latest)


def _pruned_here(conn: sqlite3.Connection, run: int) -> bool:
    return conn.execute("SELECT 1 FROM runs WHERE run = ? AND state = 'PRUNED'", (run,)).fetchone() is not None


def _store_points(conn: sqlite3.Connection, run: int, points: list[tuple], latest: dict[int, tuple]) -> int:
    if points:
        conn.executemany("INSERT INTO metrics(run, key, step, value, time) VALUES (?, ?, ?, ?, ?)", points)
        conn.executemany(SUMMARY_UPSERT, summaries(run, points, latest))
    return len(points)


def _on_start(conn: sqlite3.Connection, run: int, record: dict) -> None:
    environment = record.get("environment") or {}
    # each start after the first is a restart; Slurm's own count (set in a requeued execution) covers an
    # execution that was requeued before it could record its start
    try:
        slurm_restarts = int((environment.get("slurm") or {}).get("SLURM_RESTART_COUNT") or 0)
    except (TypeError, ValueError):
        slurm_restarts = 0
    conn.execute(
        """UPDATE runs SET host = ?, pid = ?, started = coalesce(started, ?), run_dir = coalesce(?, run_dir),
           config = coalesce(?, config), environment = ?, restarts = max(restarts + (started IS NOT NULL), ?)
           WHERE run = ?""",
        (record.get("host"), record.get("pid"), record.get("t"), record.get("run_dir"),
         json.dumps(record["config"]) if record.get("config") is not None else None,
         json.dumps(environment), slurm_restarts, run),
    )
    if record.get("config"):
        _store_config_params(conn, run, record["config"])
    executions.on_start(conn, run, record, environment.get("slurm") or {})
    conn.executemany("INSERT OR IGNORE INTO node_spools(run, path) VALUES (?, ?)",
                     [(run, str(path)) for path in record.get("node_spools") or []])
    _set_state(conn, run, "RUNNING", record.get("t"), "run")


def _store_config_params(conn: sqlite3.Connection, run: int, config: dict) -> None:
    """The config's values as params. A requeued run starts again: what it logged before keeps its value and mark."""
    conn.executemany(
        "INSERT INTO params(run, key, value, num, type) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(run, key) DO UPDATE SET value = excluded.value, num = excluded.num, type = excluded.type "
        "WHERE NOT logged",
        [(run, k, json.dumps(v), _number(v) if not isinstance(v, (str, bool)) else None, type(v).__name__)
         for k, v in flatten(config)],
    )


def _set_state(conn: sqlite3.Connection, run: int, state: str, when: Any, source: str, **fields: Any) -> None:
    sets = ", ".join(f"{name} = ?" for name in fields)
    conn.execute(f"UPDATE runs SET state = ?{', ' + sets if sets else ''} WHERE run = ?",
                 (state, *fields.values(), run))
    conn.execute("INSERT INTO run_states(run, state, time, source) VALUES (?, ?, ?, ?)", (run, state, when, source))


def ingest_run(conn: sqlite3.Connection, run: int, spool_path: str, keys: Optional[_Keys] = None) -> IngestReport:
    report = IngestReport()
    try:
        handle = open(spool_path, "rb")
    except FileNotFoundError:
        return report  # not started yet
    except OSError as error:
        report.problems.append(f"{spool_path}: {error.strerror}")
        return report
    with handle, transaction(conn):
        row = conn.execute("SELECT offset FROM spool_offsets WHERE run = ?", (run,)).fetchone()
        offset = row[0] if row else 0
        handle.seek(offset)
        data = handle.read(READ_LIMIT)
        chunk = parse_chunk(data)
        if chunk.consumed:
            report.points = _apply(conn, run, chunk.records, keys or _Keys(conn))
            for position, problem in chunk.problems:
                conn.execute("INSERT INTO ingest_problems VALUES (?, ?, ?, ?)",
                             (run, offset + position, problem, time.time()))
                report.problems.append(f"{spool_path}: byte {offset + position}: {problem}; skipped")
            conn.execute("INSERT OR REPLACE INTO spool_offsets(run, offset, updated) VALUES (?, ?, ?)",
                         (run, offset + chunk.consumed, time.time()))
    report.runs, report.records = 1, len(chunk.records)
    return report


def ingest(conn: sqlite3.Connection, sweep_id: Optional[str] = None, recent_s: Optional[float] = None) -> IngestReport:
    """Ingest every run whose spool may have grown. With `recent_s`, only runs that have not ended or ended
    within that many seconds: what a view refreshing every few seconds needs, without a stat() per old run."""
    total = IngestReport()
    query = "SELECT r.run, r.id, r.state, r.spool_path, coalesce(o.offset, 0) FROM runs r LEFT JOIN spool_offsets o USING (run) " \
            "WHERE r.spool_path IS NOT NULL"
    args: tuple = ()
    if sweep_id:
        query += " AND r.sweep_id = ?"
        args = (sweep_id,)
    if recent_s is not None:
        final = placeholders(len(FINAL_STATES))
        query += f" AND (r.state NOT IN ({final}) OR r.ended IS NULL OR r.ended >= ? OR o.offset IS NULL)"
        args = (*args, *FINAL_STATES, time.time() - recent_s)
    keys = _Keys(conn)
    candidates = conn.execute(query, args).fetchall()
    for run, run_id, state, spool_path, offset in candidates:
        try:
            if os.path.getsize(spool_path) <= offset:
                continue
        except OSError:
            folder = os.path.dirname(os.path.dirname(spool_path))
            if not os.path.isdir(folder) and state not in FINAL_STATES:  # an ended run's folder may go
                total.problems.append(f"run {run_id}: its folder {folder} no longer exists; nothing more to ingest")
            continue
        report = ingest_run(conn, run, spool_path, keys)
        total.runs += report.runs
        total.records += report.records
        total.points += report.points
        total.problems.extend(report.problems)
    ingest_node_spools(conn, [row[0] for row in candidates], keys, total)
    return total


def ingest_node_spools(conn: sqlite3.Connection, runs: list[int], keys: _Keys, total: IngestReport) -> None:
    """The GPU samples the job's other nodes wrote (tracking's node spools) of these runs, past their offsets."""
    for chunk in chunks(runs):
        rows = conn.execute(f"SELECT run, path, offset FROM node_spools WHERE run IN ({placeholders(len(chunk))})",
                            chunk).fetchall()
        for run, path, offset in rows:
            try:
                if os.path.getsize(path) <= offset:
                    continue
            except OSError:
                continue  # that node has not sampled yet
            with transaction(conn):  # the offset read and moved under one write lock: nothing twice
                (offset,) = conn.execute("SELECT offset FROM node_spools WHERE run = ? AND path = ?",
                                         (run, path)).fetchone()
                try:
                    with open(path, "rb") as handle:
                        handle.seek(offset)
                        parsed = parse_chunk(handle.read(READ_LIMIT))
                except OSError:
                    continue
                _apply(conn, run, [r for r in parsed.records if r.get("k") == "gpu"], keys)
                conn.execute("UPDATE node_spools SET offset = ? WHERE run = ? AND path = ?",
                             (offset + parsed.consumed, run, path))
            total.records += len(parsed.records)


class SpoolIngest:
    """Registry methods for the ingest: the views, the poller and the local launcher call these."""

    conn: sqlite3.Connection

    def ingest(self, sweep_id: Optional[str] = None, recent_s: Optional[float] = None) -> IngestReport:
        return ingest(self.conn, sweep_id, recent_s)

    def ingest_one(self, run_id: str) -> IngestReport:
        """Read one run's new spool lines (before acting on it: its state must be current)."""
        row = self.conn.execute("SELECT run, spool_path FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or not row[1]:
            return IngestReport()
        return ingest_run(self.conn, row[0], row[1])
