"""Live controls in the registry: the commands sent to running jobs, their answers, the sweeps' early-stopping
rules and the runs those pruned. The sender (slurmml.control.live) and the pruning rounds (slurmml.control.pruning)
write here; ingest applies the jobs' `control` answers (`answer`); views read the history and the plot marks."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable, Optional

from slurmml.core.controls import PENDING, REFUSED, describe, shown_status
from slurmml.core.states import ACTIVE_STATES, FINAL_STATES
from slurmml.registry.store import chunks, placeholders, transaction


def answer(conn: sqlite3.Connection, run: int, record: dict) -> None:
    """A job's `control` record, inside ingest's transaction: the command it answers gets its status and step.
    Only a pending one: an answer read twice, or after the sender gave up writing it, changes nothing."""
    conn.execute("UPDATE controls SET status = ?, step = ?, answered = ?, message = ?, checkpoint = ? "
                 "WHERE id = ? AND run = ? AND status = ?",
                 (record.get("status"), record.get("step"), record.get("t"), record.get("message"),
                  record.get("checkpoint"), record.get("id"), run, PENDING))


class LiveControls:
    """Registry methods for live controls and early stopping."""

    conn: sqlite3.Connection

    # -- commands -------------------------------------------------------------------------------------------
    def add_control(self, run_id: str, control_id: str, kind: str, args: dict[str, Any], user: str, source: str,
                    asked: float, deadline: Optional[float]) -> None:
        """Record a command before it is written to the run's control file: its answer can never arrive first."""
        with transaction(self.conn) as conn:
            conn.execute("INSERT INTO controls(id, run, kind, args, user, source, asked, deadline, status) "
                         "SELECT ?, run, ?, ?, ?, ?, ?, ?, ? FROM runs WHERE id = ?",
                         (control_id, kind, json.dumps(args), user, source, asked, deadline, PENDING, run_id))

    def refuse_control(self, control_id: str, message: str, when: float) -> None:
        """The command never reached the job (its control file could not be written)."""
        with transaction(self.conn) as conn:
            conn.execute("UPDATE controls SET status = ?, message = ?, answered = ? WHERE id = ? AND status = ?",
                         (REFUSED, message, when, control_id, PENDING))

    def controls(self, control_ids: Iterable[str] = (), run_id: Optional[str] = None,
                 now: Optional[float] = None) -> list[dict[str, Any]]:
        """Commands by id, or every command of one run (oldest first), with their shown status."""
        import time

        now = time.time() if now is None else now
        query = ("SELECT c.*, r.id AS run_id, r.state AS run_state FROM controls c JOIN runs r USING (run) ")
        rows: list[sqlite3.Row] = []
        if run_id is not None:
            rows = self.conn.execute(query + "WHERE r.id = ? ORDER BY c.asked", (run_id,)).fetchall()
        else:
            for chunk in chunks(list(control_ids)):
                rows += self.conn.execute(query + f"WHERE c.id IN ({placeholders(len(chunk))}) ORDER BY c.asked",
                                          chunk).fetchall()
        return [_shown(dict(row), now) for row in rows]

    def control_marks(self, run_ids: Iterable[str]) -> dict[str, list[tuple[int, str]]]:
        """run id -> (step, what changed) of each applied `set`: the marks metric plots draw."""
        marks: dict[str, list[tuple[int, str]]] = {}
        for chunk in chunks(list(run_ids)):
            rows = self.conn.execute(
                "SELECT r.id, c.step, c.kind, c.args FROM controls c JOIN runs r USING (run) "
                f"WHERE r.id IN ({placeholders(len(chunk))}) AND c.kind = 'set' AND c.status = 'applied' AND c.step IS NOT NULL "
                "ORDER BY c.step", chunk).fetchall()
            for run_id, step, kind, args in rows:
                marks.setdefault(run_id, []).append((step, describe(kind, json.loads(args or "{}"))))
        return marks

    def run_config(self, run_id: str) -> dict[str, Any]:
        """The run's recorded (masked) config, {} when it has none yet: what a `set` value is checked against."""
        row = self.conn.execute("SELECT config FROM runs WHERE id = ?", (run_id,)).fetchone()
        try:
            config = json.loads(row[0]) if row and row[0] else {}
        except ValueError:
            return {}
        return config if isinstance(config, dict) else {}

    def projections(self, run_ids: Iterable[str], metric: str) -> dict[str, Any]:
        """Active runs' projected final values of `metric` (registry/projections.py)."""
        from slurmml.registry.projections import projections

        return projections(self.conn, run_ids, metric)

    # -- early stopping -------------------------------------------------------------------------------------
    def set_early_stop(self, sweep_id: str, rule: dict[str, Any], source: str, now: float) -> None:
        with transaction(self.conn) as conn:
            conn.execute("INSERT INTO early_stop(sweep_id, rule, source, created, problem) VALUES (?, ?, ?, ?, NULL) "
                         "ON CONFLICT(sweep_id) DO UPDATE SET rule = excluded.rule, source = excluded.source, "
                         "created = excluded.created, problem = NULL", (sweep_id, json.dumps(rule), source, now))

    def clear_early_stop(self, sweep_id: str) -> int:
        """No more early stopping for this sweep; how many of its pruned runs are still stopping (the rounds
        still cancel those that do not stop in time)."""
        with transaction(self.conn) as conn:
            conn.execute("DELETE FROM early_stop WHERE sweep_id = ?", (sweep_id,))
        return len([row for row in self.overdue_prunings(float("inf"), {}) if row["sweep_id"] == sweep_id])

    def early_stop_rule(self, sweep_id: str) -> Optional[dict[str, Any]]:
        row = self.conn.execute("SELECT rule, problem FROM early_stop WHERE sweep_id = ?", (sweep_id,)).fetchone()
        return {"rule": json.loads(row[0]), "problem": row[1]} if row else None

    def watched_sweeps(self, user: str) -> list[tuple[str, dict[str, Any], Optional[str]]]:
        """(sweep id, rule, problem) of `user`'s sweeps with a rule and a run still active: what a round looks at
        (a shared registry's other sweeps are their owners' to prune)."""
        active = placeholders(len(ACTIVE_STATES))
        rows = self.conn.execute(
            "SELECT e.sweep_id, e.rule, e.problem FROM early_stop e JOIN sweeps s ON s.id = e.sweep_id "
            f"WHERE s.user = ? AND EXISTS (SELECT 1 FROM runs r WHERE r.sweep_id = e.sweep_id AND r.state IN ({active})) "
            "ORDER BY e.sweep_id", (user, *ACTIVE_STATES)).fetchall()
        return [(sweep_id, json.loads(rule), problem) for sweep_id, rule, problem in rows]

    def stopping_prunings(self) -> bool:
        """Whether a pruned run is still active and not cancelled: the rounds go on for it, rule or no rule."""
        active = placeholders(len(ACTIVE_STATES))
        return self.conn.execute(
            f"SELECT 1 FROM prunings p JOIN runs r USING (run) WHERE p.cancelled IS NULL AND r.state IN ({active}) "
            "LIMIT 1", ACTIVE_STATES).fetchone() is not None

    def set_early_stop_problem(self, sweep_id: str, problem: Optional[str]) -> bool:
        """Record why the rule cannot be applied (None: it can again); True when that changed, to say it once."""
        with transaction(self.conn) as conn:
            changed = conn.execute("UPDATE early_stop SET problem = ? WHERE sweep_id = ? AND problem IS NOT ?",
                                   (problem, sweep_id, problem)).rowcount
        return bool(changed)

    def sweep_curves(self, sweep_id: str, metric: str) -> list[dict[str, Any]]:
        """Every run of the sweep with its points of `metric` as (step, value, time) in step order, and the names
        of the other metrics the sweep's runs log (to say which exist when `metric` is not among them)."""
        runs = self.conn.execute(
            "SELECT r.run, r.id, r.state, r.slurm_job_id FROM runs r WHERE r.sweep_id = ? ORDER BY r.job_num",
            (sweep_id,)).fetchall()
        points: dict[int, list[tuple]] = {}
        rows = self.conn.execute(
            "SELECT m.run, m.step, m.value, m.time FROM metrics m JOIN metric_keys k USING (key) JOIN runs r USING (run) "
            "WHERE r.sweep_id = ? AND k.name = ? ORDER BY m.run, m.step, m.time", (sweep_id, metric)).fetchall()
        for run, step, value, when in rows:
            points.setdefault(run, []).append((step, value, when))
        return [{"run_id": run_id, "state": state, "job_id": job_id, "points": points.get(run, [])}
                for run, run_id, state, job_id in runs]

    def sweep_metric_names(self, sweep_id: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT DISTINCT k.name FROM metric_summary s JOIN metric_keys k USING (key) JOIN runs r USING (run) "
            "WHERE r.sweep_id = ? ORDER BY k.name", (sweep_id,)).fetchall()
        return [name for (name,) in rows]

    def claim_pruning(self, run_id: str, sweep_id: str, verdict: Any, reason: str, now: float) -> bool:
        """Take the decision to prune this run, once: False when another watcher (or an earlier round) has."""
        with transaction(self.conn) as conn:
            claimed = conn.execute(
                "INSERT OR IGNORE INTO prunings(run, sweep_id, rung, step, value, threshold, compared, reason, decided) "
                f"SELECT run, ?, ?, ?, ?, ?, ?, ?, ? FROM runs WHERE id = ? AND state IN ({placeholders(len(ACTIVE_STATES))})",
                (sweep_id, verdict.rung, verdict.step, verdict.value, verdict.threshold, verdict.compared, reason, now,
                 run_id, *ACTIVE_STATES)).rowcount
        return bool(claimed)

    def release_pruning(self, run_id: str) -> None:
        """Take back a decision whose stop could not be sent (the run is not this user's to stop)."""
        with transaction(self.conn) as conn:
            conn.execute("DELETE FROM prunings WHERE run = (SELECT run FROM runs WHERE id = ?)", (run_id,))

    def note_pruning_control(self, run_id: str, control_id: str) -> None:
        with transaction(self.conn) as conn:
            conn.execute("UPDATE prunings SET control_id = ? WHERE run = (SELECT run FROM runs WHERE id = ?)",
                         (control_id, run_id))

    def overdue_prunings(self, now: float, grace_s: dict[str, float], default_grace_s: float = 60.0) -> list[dict[str, Any]]:
        """Pruned runs still active `grace_s` (per sweep, else the default) after the decision, not yet cancelled."""
        active = placeholders(len(ACTIVE_STATES))
        rows = self.conn.execute(
            "SELECT r.id AS run_id, r.slurm_job_id AS job_id, p.sweep_id, p.reason, p.decided FROM prunings p "
            f"JOIN runs r USING (run) WHERE p.cancelled IS NULL AND r.state IN ({active})", ACTIVE_STATES).fetchall()
        return [dict(row) for row in rows if now - row["decided"] >= grace_s.get(row["sweep_id"], default_grace_s)]

    def claim_cancels(self, run_ids: list[str], now: float) -> list[str]:
        """Of these pruned runs, those this process cancels: each still active one is claimed once (cancelled set)."""
        active = placeholders(len(ACTIVE_STATES))
        claimed = []
        with transaction(self.conn) as conn:
            for run_id in run_ids:
                if conn.execute(f"UPDATE prunings SET cancelled = ? WHERE cancelled IS NULL AND run = (SELECT run FROM "
                                f"runs WHERE id = ? AND state IN ({active}))", (now, run_id, *ACTIVE_STATES)).rowcount:
                    claimed.append(run_id)
        return claimed

    def release_cancels(self, run_ids: list[str]) -> None:
        """scancel failed: the next round tries these again."""
        with transaction(self.conn) as conn:
            conn.executemany("UPDATE prunings SET cancelled = NULL WHERE run = (SELECT run FROM runs WHERE id = ?)",
                             [(run_id,) for run_id in run_ids])

    def mark_pruned(self, run_ids: list[str], now: float) -> None:
        """After scancel accepted: PRUNED now, with the decision's reason, so that Slurm's CANCELLED (which may
        already have been recorded by another watcher's poll) never stands for it."""
        # CANCELLED: another watcher's poll may have recorded Slurm's word first; FAILED: the TERM's own end record
        open_states = placeholders(len(ACTIVE_STATES) + 2)
        with transaction(self.conn) as conn:
            for run_id in run_ids:
                row = conn.execute("SELECT p.run, p.reason FROM prunings p JOIN runs r USING (run) WHERE r.id = ?",
                                   (run_id,)).fetchone()
                if row is None:
                    continue
                if conn.execute(f"UPDATE runs SET state = 'PRUNED', error = ?, ended = coalesce(ended, ?) WHERE run = ? "
                                f"AND state IN ({open_states})", (row[1], now, row[0], *ACTIVE_STATES, "CANCELLED", "FAILED")).rowcount:
                    conn.execute("INSERT INTO run_states(run, state, time, source) VALUES (?, 'PRUNED', ?, 'early_stop')",
                                 (row[0], now))

    def prunings(self, sweep_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT r.id AS run_id, p.rung, p.step, p.value, p.threshold, p.compared, p.reason, p.decided, p.cancelled "
            "FROM prunings p JOIN runs r USING (run) WHERE p.sweep_id = ? ORDER BY p.decided, r.id",
            (sweep_id,)).fetchall()
        return [dict(row) for row in rows]


def _shown(row: dict[str, Any], now: float) -> dict[str, Any]:
    row["args"] = json.loads(row["args"] or "{}")
    row["what"] = describe(row["kind"], row["args"])
    row["shown"] = shown_status(row["status"], row["deadline"], row["run_state"] in FINAL_STATES, now)
    return row
