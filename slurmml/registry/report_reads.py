"""What `slurmml report` reads from the registry: the runs of a sweep or a time window with their sweep's
name, user and direction, and per-run figures for those runs only (GPU sample aggregates, which metrics they
logged, a metric's last value), aggregated in SQL.

Functions take a connection (Registry.conn) and return plain rows; slurmml.report.collect turns them into
a report's inputs. Runs are named by their compact key (`runs.run`), in chunks of bound parameters.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional

from slurmml.registry.store import CHUNK, chunks, placeholders


def report_runs(conn: Any, sweep: Optional[str] = None, since: Optional[float] = None,
                until: Optional[float] = None) -> list[dict[str, Any]]:
    """Runs created in [since, until) (of one sweep), ordered by sweep and job number, overrides decoded.

    Keys: run (the compact key), id, sweep_id, job_num, overrides, state, slurm_job_id, exit_code, error,
    created, started, ended, result, own_max_rss_mb (the run's own peak), sweep_name, user, direction.
    """
    conditions, args = [], []
    if sweep:
        conditions.append("r.sweep_id = ?")
        args.append(sweep)
    if since is not None:
        conditions.append("coalesce(r.created, r.started) >= ?")
        args.append(since)
    if until is not None:
        conditions.append("coalesce(r.created, r.started) < ?")
        args.append(until)
    sql = ("SELECT r.run, r.id, r.sweep_id, r.job_num, r.overrides, r.state, r.slurm_job_id, r.exit_code, r.error, "
           "r.created, r.started, r.ended, r.result, r.max_rss_mb AS own_max_rss_mb, s.name AS sweep_name, "
           "s.user AS user, s.direction AS direction, "
           # executions a requeue ended: sacct describes only a job's last one
           "(SELECT sum(e.ended - e.started) FROM executions e WHERE e.run = r.run AND e.state = 'REQUEUED') "
           "AS requeued_s, (SELECT sum(e.repeated_steps) FROM executions e WHERE e.run = r.run) AS repeated_steps, "
           "(SELECT count(*) FROM executions e WHERE e.run = r.run) AS executions "
           "FROM runs r LEFT JOIN sweeps s ON s.id = r.sweep_id "
           f"{'WHERE ' + ' AND '.join(conditions) if conditions else ''} "
           "ORDER BY coalesce(r.sweep_id, ''), r.job_num, r.created")
    runs = []
    for row in conn.execute(sql, args):
        run = dict(row)
        run["overrides"] = json.loads(run["overrides"] or "[]")
        runs.append(run)
    return runs


def gpu_sample_summaries(conn: Any, run_keys: Iterable[int]) -> dict[int, dict[str, Any]]:
    """run key -> count (samples), util (mean %), mem_max and mem_total (MB), gpus (devices seen), for the
    runs that recorded GPU samples."""
    found = {}
    for part in chunks(run_keys, CHUNK):
        for run, count, util, mem_max, mem_total, gpus in conn.execute(
                "SELECT run, count(*), avg(util), max(mem_used), max(mem_total), count(DISTINCT coalesce(uuid, gpu)) "
                f"FROM system_samples WHERE run IN ({placeholders(len(part))}) GROUP BY run", part):
            found[run] = {"count": count, "util": util, "mem_max": mem_max, "mem_total": mem_total, "gpus": gpus}
    return found


def metric_run_counts(conn: Any, run_keys: Iterable[int]) -> dict[str, int]:
    """metric name -> how many of these runs logged it."""
    counts: dict[str, int] = {}
    for part in chunks(run_keys, CHUNK):
        for name, count in conn.execute(
                "SELECT k.name, count(*) FROM metric_summary s JOIN metric_keys k USING (key) "
                f"WHERE s.run IN ({placeholders(len(part))}) GROUP BY k.name", part):
            counts[name] = counts.get(name, 0) + count
    return counts


def last_metric_values(conn: Any, run_keys: Iterable[int], metric: str) -> dict[int, float]:
    """run key -> the last value these runs logged of `metric`."""
    found = {}
    for part in chunks(run_keys, CHUNK):
        for run, last in conn.execute(
                "SELECT s.run, s.last FROM metric_summary s JOIN metric_keys k USING (key) "
                f"WHERE k.name = ? AND s.last IS NOT NULL AND s.run IN ({placeholders(len(part))})", [metric, *part]):
            found[run] = last
    return found
