"""What the launcher and the run actions write: sweeps and their runs before any job starts, sbatch's
answers, final states they decide, requeues, runs whose submission failed."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from slurmml.core.states import FINAL_STATES
from slurmml.errors import SlurmmlError
from slurmml.registry.store import placeholders, transaction
from slurmml.tracking.secrets import mask_argv, mask_overrides


def end_runs(conn: sqlite3.Connection, states: dict[str, tuple[str, str]], source: str) -> None:
    """run id -> (final state, reason), for runs that have not reached a final state of their own."""
    now = time.time()
    final = placeholders(len(FINAL_STATES))
    with transaction(conn):
        for run_id, (state, reason) in states.items():
            changed = conn.execute(
                f"UPDATE runs SET state = ?, error = ?, ended = coalesce(ended, ?) WHERE id = ? "
                f"AND state NOT IN ({final})", (state, reason, now, run_id, *FINAL_STATES)).rowcount
            if changed:
                conn.execute("INSERT INTO run_states(run, state, time, source) "
                             "SELECT run, ?, ?, ? FROM runs WHERE id = ?", (state, now, source, run_id))


class LaunchWrites:
    """Registry methods for the launcher (slurmml.launcher) and the run actions (slurmml.control)."""

    conn: sqlite3.Connection
    path: Path

    def add_sweep(self, sweep: dict[str, Any], runs: Iterable[dict[str, Any]]) -> None:
        """Record a sweep and its runs before any job starts (state SUBMITTING).

        A sweep already recorded is kept as it is: this also adds runs (a clone, with its `parent_id`) to it.
        Secret-looking values in the command line and the overrides are masked here, whoever records them.
        """
        now = time.time()
        argv = mask_argv(sweep["argv"]) if sweep.get("argv") is not None else None
        with transaction(self.conn) as conn:
            conn.execute(
                "INSERT OR IGNORE INTO sweeps(id, name, user, created, argv, cwd, sweep_dir, backend, git_commit, "
                "git_dirty, git_diff, launcher, direction) VALUES (:id, :name, :user, :created, :argv, :cwd, "
                ":sweep_dir, :backend, :git_commit, :git_dirty, :git_diff, :launcher, :direction)",
                {**{k: None for k in ("name", "user", "created", "cwd", "sweep_dir", "backend", "git_commit", "git_dirty",
                                       "git_diff", "direction")},
                 **sweep, "argv": json.dumps(argv), "launcher": json.dumps(sweep.get("launcher"))},
            )
            if sweep.get("early_stop"):  # the launcher's rule, with the sweep: a later batch keeps what `prune` set
                conn.execute("INSERT OR IGNORE INTO early_stop(sweep_id, rule, source, created) VALUES (?, ?, ?, ?)",
                             (sweep["id"], json.dumps(sweep["early_stop"]), "launch", now))
            conn.executemany(
                "INSERT INTO runs(id, sweep_id, job_num, overrides, spool_path, log_path, parent_id, state, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'SUBMITTING', ?)",
                [(r["id"], sweep["id"], r["job_num"], json.dumps(mask_overrides(r.get("overrides", []))),
                  r.get("spool_path"), r.get("log_path"), r.get("parent_id"), now) for r in runs],
            )

    def mark_queued(self, job_ids: dict[str, tuple[str, str]]) -> None:
        """run id -> (Slurm job id, log path) once sbatch has answered."""
        self._queue(job_ids, "launcher", "", "AND state = 'SUBMITTING'")

    def claim_for_resubmission(self, states: dict[str, str]) -> dict[str, Optional[str]]:
        """run id -> the state it was chosen in: all these runs become SUBMITTING (their old job id put aside, so
        the poller leaves them alone), or none if another resubmission took one first (SlurmmlError). Returns
        their old job ids, for release_resubmission."""
        with transaction(self.conn) as conn:
            old = {run_id: row[0] for run_id in states
                   for row in conn.execute("SELECT slurm_job_id FROM runs WHERE id = ?", (run_id,))}
            for run_id, state in states.items():
                taken = conn.execute("UPDATE runs SET state = 'SUBMITTING', slurm_job_id = NULL "
                                     "WHERE id = ? AND state = ?", (run_id, state)).rowcount
                if not taken:
                    raise SlurmmlError(f"run {run_id} is no longer {state}: another command resubmitted or "
                                       f"requeued it; nothing was resubmitted")
        return old

    def release_resubmission(self, states: dict[str, str], job_ids: dict[str, Optional[str]]) -> None:
        """sbatch refused: the claimed runs go back to how they ended, under their old job."""
        with transaction(self.conn) as conn:
            conn.executemany("UPDATE runs SET state = ?, slurm_job_id = ? WHERE id = ? AND state = 'SUBMITTING'",
                             [(state, job_ids.get(run_id), run_id) for run_id, state in states.items()])

    def mark_resubmitted(self, job_ids: dict[str, tuple[str, str]]) -> None:
        """run id -> (new Slurm job id, log path) after `slurmml resubmit`: the claimed run is QUEUED under its new
        job; its end is cleared, its history and executions stay (the next start is its next execution)."""
        self._queue(job_ids, "resubmitted", ", ended = NULL, error = NULL, exit_code = NULL, result = NULL",
                    "AND state = 'SUBMITTING'")

    def _queue(self, job_ids: dict[str, tuple[str, str]], source: str, clear: str, only: str) -> None:
        now = time.time()
        with transaction(self.conn) as conn:
            for run_id, (job_id, log_path) in job_ids.items():
                conn.execute(f"UPDATE runs SET slurm_job_id = ?, log_path = ?, state = 'QUEUED'{clear} "
                             f"WHERE id = ? {only}", (job_id, log_path, run_id))
                conn.execute("INSERT INTO run_states(run, state, time, source) "
                             "SELECT run, 'QUEUED', ?, ? FROM runs WHERE id = ?", (now, source, run_id))

    def mark_final(self, states: dict[str, tuple[str, str]], source: str) -> None:
        """run id -> (final state, reason), for runs that have not reached a final state of their own."""
        end_runs(self.conn, states, source)

    def mark_requeued(self, run_id: str, source: str = "user") -> None:
        """After `scontrol requeue` answered: the run is QUEUED again, and the shared poller follows it again.

        Its end (ended, error, exit code) is cleared; `started` stays, so the rerun's start record counts as a
        restart when it is ingested. The cached Slurm record of its job goes: it describes the execution that
        ended, and the poller would settle the run back to that state before squeue saw the job again.
        """
        now = time.time()
        with transaction(self.conn) as conn:
            row = conn.execute("SELECT slurm_job_id FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise SlurmmlError(f"no run {run_id!r} in {self.path}")
            conn.execute("UPDATE runs SET state = 'QUEUED', ended = NULL, error = NULL, exit_code = NULL "
                         "WHERE id = ?", (run_id,))
            conn.execute("INSERT INTO run_states(run, state, time, source) "
                         "SELECT run, 'QUEUED', ?, ? FROM runs WHERE id = ?", (now, source, run_id))
            if row[0]:
                conn.execute("DELETE FROM slurm_jobs WHERE job_id = ?", (row[0],))

    def next_job_num(self, sweep_id: str) -> int:
        """The job number a run added to this sweep gets: one more than the largest so far."""
        row = self.conn.execute("SELECT max(job_num) FROM runs WHERE sweep_id = ?", (sweep_id,)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def discard_runs(self, sweep_id: str, run_ids: list[str]) -> None:
        """Forget runs whose submission failed, and their sweep if nothing else is left in it."""
        with transaction(self.conn) as conn:
            conn.executemany("DELETE FROM runs WHERE id = ?", [(r,) for r in run_ids])
            conn.execute("DELETE FROM sweeps WHERE id = ? AND NOT EXISTS "
                         "(SELECT 1 FROM runs WHERE sweep_id = ?)", (sweep_id, sweep_id))
