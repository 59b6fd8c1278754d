"""One run across its executions: each start of the task (first, after a requeue, after a resubmission) is an
execution; a requeue record ends one; a resume record supersedes the points earlier executions logged after
the step resumed from, so a curve keeps one value per step (they move to superseded_metrics, not away).

Called by the spool ingest (registry/ingest.py) inside its transaction, in the order the records were written.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Mapping, Optional

from slurmml.core.job_env import job_id_from_environment, restart_count
from slurmml.core.states import is_final
from slurmml.registry.summary import summary_rows

EXECUTION_FIELDS = ("number", "job_id", "host", "started", "ended", "state", "reason", "checkpoint_step",
                    "resumed_from", "superseded", "repeated_steps", "lost_s")


def latest(conn: sqlite3.Connection, run: int) -> Optional[int]:
    row = conn.execute("SELECT max(number) FROM executions WHERE run = ?", (run,)).fetchone()
    return row[0]


def on_start(conn: sqlite3.Connection, run: int, record: Mapping[str, Any], slurm: Mapping[str, str]) -> None:
    """A new execution: SLURM_RESTART_COUNT numbers it, or one more than the last (a resubmission starts at 0
    again under a new job id; an execution requeued before it could write its start leaves a gap)."""
    last = latest(conn, run)
    number = max(restart_count(slurm), -1 if last is None else last + 1)
    job_id = job_id_from_environment(slurm, default="") or None
    if last is not None:  # the one before ended at the latest now (a kill leaves no record of its own): as the
        # poller settled the run (OUT_OF_MEMORY, before a resubmission), else requeued
        (state,) = conn.execute("SELECT state FROM runs WHERE run = ?", (run,)).fetchone()
        conn.execute("UPDATE executions SET state = ? WHERE run = ? AND number = ? AND state = 'RUNNING'",
                     (state if is_final(state) else "REQUEUED", run, last))
    conn.execute(
        "INSERT OR REPLACE INTO executions(run, number, job_id, host, started, ended, state) "
        "VALUES (?, ?, ?, ?, ?, ?, 'RUNNING')",
        (run, number, job_id, record.get("host"), record.get("t"), record.get("t")))


def on_requeue(conn: sqlite3.Connection, run: int, record: Mapping[str, Any]) -> None:
    conn.execute(
        "UPDATE executions SET state = 'REQUEUED', reason = ?, checkpoint_step = ?, ended = ? "
        "WHERE run = ? AND number = ?",
        (record.get("reason"), record.get("step"), record.get("t"), run, latest(conn, run)))


def on_requeue_refused(conn: sqlite3.Connection, run: int) -> None:
    conn.execute("UPDATE executions SET state = 'RUNNING', reason = NULL WHERE run = ? AND number = ?",
                 (run, latest(conn, run)))


def on_end(conn: sqlite3.Connection, run: int, state: str, when: Any) -> None:
    conn.execute("UPDATE executions SET state = ?, ended = ? WHERE run = ? AND number = ?",
                 (state, when, run, latest(conn, run)))


def seen(conn: sqlite3.Connection, run: int, when: Optional[float]) -> None:
    """The running execution lasted at least until its latest record."""
    if when is not None:
        conn.execute("UPDATE executions SET ended = max(coalesce(ended, ?), ?) "
                     "WHERE run = ? AND number = ? AND state = 'RUNNING'", (when, when, run, latest(conn, run)))


def on_resume(conn: sqlite3.Connection, run: int, step: Any) -> int:
    """The current execution continues from `step`: earlier points after it are superseded. Returns how many."""
    if type(step) is not int:
        return 0
    number = latest(conn, run)
    repeated, first, last = conn.execute(
        "SELECT max(step), min(time), max(time) FROM metrics WHERE run = ? AND step > ?", (run, step)).fetchone()
    moved = conn.execute(
        "INSERT INTO superseded_metrics(run, key, step, value, time, execution) "
        "SELECT run, key, step, value, time, ? FROM metrics WHERE run = ? AND step > ?",
        (number, run, step)).rowcount
    if moved:
        conn.execute("DELETE FROM metrics WHERE run = ? AND step > ?", (run, step))
        summarize_again(conn, run)
    if number is not None:
        conn.execute(
            "UPDATE executions SET resumed_from = ?, superseded = superseded + ?, repeated_steps = repeated_steps + ?, "
            "lost_s = lost_s + ? WHERE run = ? AND number = ?",
            (step, moved, (repeated - step) if repeated is not None else 0,
             (last - first) if moved and last is not None and first is not None else 0, run, number))
    return moved


def summarize_again(conn: sqlite3.Connection, run: int) -> None:
    """metric_summary of one run from its points (after some were superseded), by the ingest's own rule
    (summary.latest_point): the points in the order they were written."""
    points = [(run, key, step, value, None) for key, step, value in conn.execute(
        "SELECT key, step, value FROM metrics WHERE run = ? ORDER BY rowid", (run,))]
    conn.execute("DELETE FROM metric_summary WHERE run = ?", (run,))
    conn.executemany("INSERT INTO metric_summary(run, key, last, last_step, min, max, count) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     summary_rows(run, points))


def of_run(conn: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    """A run's executions, first first, as dicts of EXECUTION_FIELDS plus gpu_hours (GPUs Slurm allocated to
    the run's job x the execution's span, when both are known)."""
    rows = conn.execute(
        f"""SELECT {', '.join('e.' + f for f in EXECUTION_FIELDS)}, j.alloc_gpus
            FROM executions e JOIN runs r USING (run) LEFT JOIN slurm_jobs j ON j.job_id = coalesce(e.job_id, r.slurm_job_id)
            WHERE r.id = ? ORDER BY e.number""", (run_id,)).fetchall()
    found = []
    for row in rows:
        execution = dict(zip(EXECUTION_FIELDS, row))
        gpus, span = row[-1], _span(execution)
        execution["elapsed_s"] = span
        execution["gpu_hours"] = round(gpus * span / 3600, 4) if gpus is not None and span is not None else None
        found.append(execution)
    return found


def _span(execution: Mapping[str, Any]) -> Optional[float]:
    started, ended = execution.get("started"), execution.get("ended")
    return round(ended - started, 1) if started is not None and ended is not None else None
