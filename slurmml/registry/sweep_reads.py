"""Registry reads about whole sweeps: which sweeps a folder holds, and how their runs stand.

Each function takes a connection and returns plain Python values; nothing here writes.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Iterable

from slurmml.registry.store import placeholders


def sweeps_launched_into(conn: sqlite3.Connection, folders: Iterable[str]) -> list[str]:
    """Ids of the sweeps recorded with one of these sweep folders, oldest first."""
    folders = list(folders)
    rows = conn.execute(
        f"SELECT id FROM sweeps WHERE sweep_dir IN ({placeholders(len(folders))}) ORDER BY created", folders)
    return [row[0] for row in rows]


def state_counts(conn: sqlite3.Connection, sweep_ids: list[str]) -> dict[str, int]:
    """state -> how many runs of these sweeps are in it."""
    return dict(conn.execute(
        f"SELECT state, count(*) FROM runs WHERE sweep_id IN ({placeholders(len(sweep_ids))}) GROUP BY state",
        sweep_ids).fetchall())


def any_result(conn: sqlite3.Connection, sweep_ids: list[str]) -> bool:
    """Whether a run of these sweeps recorded a result (its task's numeric return value)."""
    return conn.execute(
        f"SELECT 1 FROM runs WHERE sweep_id IN ({placeholders(len(sweep_ids))}) AND result IS NOT NULL LIMIT 1",
        sweep_ids).fetchone() is not None


def logged_metrics(conn: sqlite3.Connection, sweep_ids: list[str]) -> dict[str, int]:
    """metric name -> how many runs of these sweeps logged it."""
    return dict(conn.execute(
        f"SELECT k.name, count(*) FROM metric_summary s JOIN metric_keys k USING (key) JOIN runs r USING (run) "
        f"WHERE r.sweep_id IN ({placeholders(len(sweep_ids))}) GROUP BY k.name", sweep_ids).fetchall())


def run_spools(conn: sqlite3.Connection, sweep_id: str) -> list[dict]:
    """Each run of the sweep with its state and spool path (`<batch dir>/spool/<index>.jsonl`: which batch it
    is in and at which task index), in job-number order."""
    rows = conn.execute("SELECT id, state, spool_path FROM runs WHERE sweep_id = ? ORDER BY job_num", (sweep_id,))
    return [{"id": row[0], "state": row[1], "spool_path": row[2]} for row in rows]


def sweep_launch(conn: sqlite3.Connection, sweep_id: str) -> dict:
    """Where and by whom the sweep was launched: user, backend, cwd (the launch's working directory), sweep_dir,
    and argv (the launch's command line, where the task's modules are found)."""
    row = conn.execute("SELECT user, backend, cwd, sweep_dir, argv FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
    if row is None:
        return {}
    launch = dict(zip(("user", "backend", "cwd", "sweep_dir"), row[:4]))
    launch["argv"] = json.loads(row[4]) if row[4] else None
    return launch
