"""Lineage reads: what a run used (dataset versions) and produced (artifacts), where it came from (its parent, the
run it was cloned from) and what came of it (its clones); and which runs used a dataset version."""

from __future__ import annotations

import sqlite3
from typing import Any, Optional

from slurmml.errors import SlurmmlError

_RUN_BRIEF = "r.id, r.sweep_id, r.state, r.host, r.created, r.result"


def _fields(row: sqlite3.Row) -> dict[str, Any]:
    """A row as a dict, without the runs table's internal key."""
    return {key: row[key] for key in row.keys() if key != "run"}


def run_lineage(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """The run, its inputs, its artifacts, its parent and its children (clones), each child's inputs."""
    row = conn.execute(f"SELECT r.run, {_RUN_BRIEF}, r.parent_id FROM runs r WHERE r.id = ?", (run_id,)).fetchone()
    if row is None:
        raise SlurmmlError(f"no run {run_id!r} in the registry")
    key = row["run"]
    run = _fields(row)
    run["inputs"] = inputs_of(conn, key)
    run["artifacts"] = [dict(r) for r in conn.execute(
        "SELECT name, size, digest, uri, upload, path FROM artifacts WHERE run = ? ORDER BY time", (key,))]
    parent = run.pop("parent_id")
    run["parent"] = None
    if parent:
        found = conn.execute(f"SELECT r.run, {_RUN_BRIEF} FROM runs r WHERE r.id = ?", (parent,)).fetchone()
        run["parent"] = ({**_fields(found), "inputs": inputs_of(conn, found["run"])}
                         if found else {"id": parent, "state": None})
    run["children"] = [{**_fields(c), "inputs": inputs_of(conn, c["run"])}
                       for c in conn.execute(f"SELECT r.run, {_RUN_BRIEF} FROM runs r WHERE r.parent_id = ? "
                                             "ORDER BY r.created", (run_id,))]
    return run


def inputs_of(conn: sqlite3.Connection, run: int) -> list[dict[str, Any]]:
    """The dataset versions run `run` (the runs table's key) read, first read first."""
    return [dict(r) for r in conn.execute(
        "SELECT dataset, version, digest, time, fetched FROM run_inputs WHERE run = ? ORDER BY time", (run,))]


def dataset_users(conn: sqlite3.Connection, name: str, version: Optional[int] = None) -> list[dict[str, Any]]:
    """The runs that read dataset `name` (version `version`, or any), oldest first, with what each produced."""
    sql = (f"SELECT r.run, {_RUN_BRIEF}, i.version, i.digest, i.fetched, r.parent_id FROM run_inputs i "
           f"JOIN runs r ON r.run = i.run WHERE i.dataset = ?")
    args: list[Any] = [name]
    if version is not None:
        sql += " AND i.version = ?"
        args.append(version)
    rows = []
    for row in conn.execute(sql + " ORDER BY i.version, r.created", args):
        item = _fields(row)
        item["artifacts"] = [r[0] for r in conn.execute("SELECT name FROM artifacts WHERE run = ? ORDER BY time",
                                                        (row["run"],))]
        rows.append(item)
    return rows


def used_versions(conn: sqlite3.Connection, name: str) -> dict[int, str]:
    """version -> manifest digest, of the versions of `name` that some run read."""
    return {version: digest for version, digest in conn.execute(
        "SELECT version, min(digest) FROM run_inputs WHERE dataset = ? GROUP BY version ORDER BY version", (name,))}


def is_run(conn: sqlite3.Connection, run_id: str) -> bool:
    return conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None


