"""What the poller needs from the registry: the cache of Slurm's view, the shared call schedule, the runs it
follows, state changes.

Functions take a Registry (slurmml.registry.registry); SlurmCache gives it the cache's methods. Every write
is one store.transaction, so two login-node processes polling one registry take turns and never both
claim a Slurm call.

The `poller_schedule` table (migration 3) holds one row per Slurm call ('squeue', 'sacct': when it
last started, when the next may start, consecutive failures) and a few marks the pollers share,
stored as rows of the same table under names with a dot:
  'squeue.ok' / 'sacct.ok'   last = start time of the last call that succeeded
  'accounting.off'           last = when sacct said accounting is disabled; next_allowed = when to ask again
  'sacct.drop.<Field>'       this sacct refused <Field> (22.05 has no Restarts): never ask for it again
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import astuple, dataclass
from typing import Any, Iterable, Optional

from slurmml.core.reconcile import RunChange
from slurmml.core.states import FINAL_STATES, SLURM_FINAL
from slurmml.registry.store import chunks, placeholders, transaction
from slurmml.slurm.accounting import JOB_RECORD_COLUMNS, JobRecord


@dataclass(frozen=True)
class Mark:
    last: Optional[float]
    next_allowed: Optional[float]
    failures: int


@dataclass(frozen=True)
class TrackedRun:
    """A run with a Slurm job that the poller follows."""

    id: str
    sweep_id: Optional[str]
    job_id: str
    state: str
    exit_code: Optional[int]
    error: Optional[str]
    restarts: int
    created: Optional[float]
    queued_at: Optional[float]  # when sbatch (launcher) or `scontrol requeue` (user) last answered: QUEUED changes
    ended: Optional[float]
    log_path: Optional[str]

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


# -- the shared schedule -----------------------------------------------------------------------------------

def mark(registry: Any, name: str) -> Optional[Mark]:
    row = registry.conn.execute("SELECT last, next_allowed, failures FROM poller_schedule WHERE call = ?",
                                (name,)).fetchone()
    return Mark(row[0], row[1], row[2] or 0) if row else None


def marks(registry: Any, prefix: str) -> dict[str, Mark]:
    rows = registry.conn.execute("SELECT call, last, next_allowed, failures FROM poller_schedule "
                                 "WHERE substr(call, 1, ?) = ?", (len(prefix), prefix))
    return {row[0]: Mark(row[1], row[2], row[3] or 0) for row in rows}


def set_mark(registry: Any, name: str, last: Optional[float], next_allowed: Optional[float] = None) -> None:
    with transaction(registry.conn) as conn:
        conn.execute("INSERT INTO poller_schedule(call, last, next_allowed, failures) VALUES (?, ?, ?, 0) "
                     "ON CONFLICT(call) DO UPDATE SET last = excluded.last, next_allowed = excluded.next_allowed",
                     (name, last, next_allowed))


def clear_mark(registry: Any, name: str) -> None:
    with transaction(registry.conn) as conn:
        conn.execute("DELETE FROM poller_schedule WHERE call = ?", (name,))


def claim_call(registry: Any, call: str, now: float, hold_s: float) -> bool:
    """Take the right to make `call` now, if the schedule allows it; nobody else may until `now + hold_s`.

    `hold_s` covers the call itself (up to its timeout): if this process dies mid-call, the others
    wait that long, then go on. `record_call` sets the real next time once the call has answered.
    """
    with transaction(registry.conn) as conn:
        row = conn.execute("SELECT next_allowed FROM poller_schedule WHERE call = ?", (call,)).fetchone()
        if row is not None and row[0] is not None and now < row[0]:
            return False
        conn.execute("INSERT INTO poller_schedule(call, last, next_allowed, failures) VALUES (?, ?, ?, 0) "
                     "ON CONFLICT(call) DO UPDATE SET last = excluded.last, next_allowed = excluded.next_allowed",
                     (call, now, now + hold_s))
    return True


def record_call(registry: Any, call: str, started: float, now: float, ok: bool, interval_s: float,
                backoff_max_s: float) -> float:
    """After a claimed call: success -> next at started + interval, failures reset; failure -> doubled backoff.

    Returns the delay before the next call is allowed, counted from `now`.
    """
    with transaction(registry.conn) as conn:
        row = conn.execute("SELECT failures FROM poller_schedule WHERE call = ?", (call,)).fetchone()
        failures = 0 if ok else ((row[0] or 0) if row else 0) + 1
        if ok:
            next_allowed = started + interval_s
        else:
            next_allowed = now + min(interval_s * 2 ** failures, backoff_max_s)
        conn.execute("INSERT INTO poller_schedule(call, last, next_allowed, failures) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT(call) DO UPDATE SET next_allowed = excluded.next_allowed, "
                     "failures = excluded.failures", (call, started, next_allowed, failures))
        if ok:
            conn.execute("INSERT INTO poller_schedule(call, last, next_allowed, failures) VALUES (?, ?, NULL, 0) "
                         "ON CONFLICT(call) DO UPDATE SET last = max(coalesce(last, 0), excluded.last)",
                         (f"{call}.ok", started))
    return max(0.0, next_allowed - now)


def postpone_call(registry: Any, call: str, until: float) -> None:
    """No call before `until` (e.g. sacct on a cluster without accounting), without counting a failure."""
    with transaction(registry.conn) as conn:
        conn.execute("INSERT INTO poller_schedule(call, last, next_allowed, failures) VALUES (?, NULL, ?, 0) "
                     "ON CONFLICT(call) DO UPDATE SET next_allowed = excluded.next_allowed, failures = 0",
                     (call, until))


# -- the runs the poller follows ------------------------------------------------------------------------------

# the TrackedRun fields, then the sweep's cwd (to resolve relative log paths)
_TRACKED_COLUMNS = """r.id, r.sweep_id, r.slurm_job_id, r.state, r.exit_code, r.error, coalesce(r.restarts, 0), r.created,
    (SELECT max(s.time) FROM run_states s WHERE s.run = r.run AND s.state = 'QUEUED' AND s.source IN ('launcher', 'user')),
    r.ended, r.log_path, (SELECT w.cwd FROM sweeps w WHERE w.id = r.sweep_id)"""


def tracked_runs(registry: Any, ended_since: float, unaccounted_since: Optional[float] = None) -> list[TrackedRun]:
    """Runs with a Slurm job that have not ended, or ended at or after `ended_since` (or at an unknown time),
    or ended at or after `unaccounted_since` without sacct's final record in the cache (nobody polled then)
    and without sacct having said it has none (a record with no state)."""
    final = placeholders(len(FINAL_STATES))
    slurm_final = placeholders(len(SLURM_FINAL))
    rows = registry.conn.execute(
        f"""SELECT {_TRACKED_COLUMNS}
            FROM runs r
            WHERE r.slurm_job_id IS NOT NULL
              AND (r.state NOT IN ({final}) OR r.ended IS NULL OR r.ended >= ?
                   OR (r.ended >= ? AND NOT EXISTS (
                       SELECT 1 FROM slurm_jobs j WHERE j.job_id = r.slurm_job_id AND j.source = 'sacct'
                         AND (j.state IN ({slurm_final}) OR j.state IS NULL))))""",
        (*FINAL_STATES, ended_since, ended_since if unaccounted_since is None else unaccounted_since,
         *sorted(SLURM_FINAL))).fetchall()
    return [_tracked(row) for row in rows]


def _tracked(row: Any) -> TrackedRun:
    """A relative log path (a sweep launched with a relative hydra.sweep.dir) is relative to the sweep's cwd."""
    *fields, cwd = row
    log_path = fields[-1]
    if log_path and cwd and not os.path.isabs(log_path):
        fields[-1] = os.path.join(cwd, log_path)
    return TrackedRun(*fields)


def slurm_run_ids(registry: Any, sweep_ids: Iterable[str]) -> list[str]:
    """The ids of these sweeps' runs that have a Slurm job: what a view of the sweeps asks the poller about."""
    ids = list(sweep_ids)
    if not ids:
        return []
    return [row[0] for row in registry.conn.execute(
        f"SELECT id FROM runs WHERE sweep_id IN ({placeholders(len(ids))}) AND slurm_job_id IS NOT NULL", ids)]


def runs_by_id(registry: Any, run_ids: Iterable[str]) -> dict[str, TrackedRun]:
    """The same rows as tracked_runs, for these run ids (re-read after an ingest)."""
    found: dict[str, TrackedRun] = {}
    for part in chunks(run_ids):
        rows = registry.conn.execute(
            f"""SELECT {_TRACKED_COLUMNS}
                FROM runs r WHERE r.id IN ({placeholders(len(part))})""", part).fetchall()
        found.update((row[0], _tracked(row)) for row in rows)
    return found


def cached_records(registry: Any, job_ids: Iterable[str]) -> dict[str, Any]:
    """The slurm_jobs rows of these jobs, as JobRecords (selected in SQL: the cache keeps every job ever seen)."""
    ids = list(dict.fromkeys(job_ids))
    columns = ", ".join(f'"{c}"' for c in JOB_RECORD_COLUMNS)
    found = {}
    for part in chunks(ids):
        for row in registry.conn.execute(
                f"SELECT {columns} FROM slurm_jobs WHERE job_id IN ({placeholders(len(part))})", part):
            found[row[0]] = JobRecord(*row)
    return found


class SlurmCache:
    """Registry methods for the cache of Slurm's view: the poller stores it, every view reads it."""

    conn: sqlite3.Connection

    def store_job_records(self, records: Iterable[Any]) -> None:
        """The poller's results: upsert Slurm's view of each job (JobRecord) into the cache every view reads."""
        columns = ", ".join(f'"{c}"' for c in JOB_RECORD_COLUMNS)
        marks = placeholders(len(JOB_RECORD_COLUMNS))
        with transaction(self.conn) as conn:
            conn.executemany(f"INSERT OR REPLACE INTO slurm_jobs({columns}) VALUES ({marks})",
                             [astuple(r) for r in records])

    def job_records(self, job_ids: Optional[Iterable[str]] = None) -> dict[str, Any]:
        """job id -> JobRecord, for these jobs (those the cache has) or, without ids, for every cached job."""
        if job_ids is not None:
            return cached_records(self, job_ids)
        columns = ", ".join(f'"{c}"' for c in JOB_RECORD_COLUMNS)
        return {row[0]: JobRecord(*row) for row in self.conn.execute(f"SELECT {columns} FROM slurm_jobs")}


def apply_changes(registry: Any, changes: Iterable[RunChange], source: str,
                  now: Optional[float] = None) -> list[RunChange]:
    """Apply the changes in one transaction; a state history row for each run whose state changed.

    Returns the changes that took effect.
    """
    changes = list(changes)
    if not changes:
        return []
    when = time.time() if now is None else now
    applied = []
    with transaction(registry.conn) as conn:
        for change in changes:
            final = change.state in FINAL_STATES
            cursor = conn.execute(
                f"""UPDATE runs SET state = ?, error = CASE WHEN ? THEN NULL ELSE coalesce(?, error) END,
                        exit_code = CASE WHEN ? THEN NULL ELSE coalesce(exit_code, ?) END,
                        restarts = max(coalesce(restarts, 0), coalesce(?, 0)),
                        ended = CASE WHEN ? THEN NULL WHEN ? THEN coalesce(ended, ?) ELSE ended END
                    WHERE id = ? AND state IN ({placeholders(len(change.only_from))})""",
                (change.state, change.reopen, change.error, change.reopen, change.exit_code, change.restarts,
                 change.reopen, final, change.ended if change.ended is not None else when, change.run_id,
                 *change.only_from))
            if cursor.rowcount:
                applied.append(change)
                conn.execute("INSERT INTO run_states(run, state, time, source) SELECT run, ?, ?, ? FROM runs "
                             "WHERE id = ?", (change.state, when, source, change.run_id))
            elif change.restarts:
                conn.execute("UPDATE runs SET restarts = max(coalesce(restarts, 0), ?) WHERE id = ?",
                             (change.restarts, change.run_id))
    return applied

