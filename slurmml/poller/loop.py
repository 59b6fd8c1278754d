"""The one poller that talks to Slurm for every view (CLI, launcher in wait mode, TUI); why there is only one:
docs/architecture.md, "One poller, on a schedule shared through the registry".

Each `poll()` does at most what the schedule shared through the registry allows:
- one `squeue --me` per interval (default 10 s, never below 5 s) for all of the user's active jobs;
- one `sacct` per interval (default 60 s) for jobs that left squeue, `--starttime`-bounded, at most
  `sacct_chunk` job ids per call (array tasks are asked for by their array's id);
- on a refusal or a timeout the call backs off, doubling up to 5 minutes; a success resets it.
A call is claimed inside one BEGIN IMMEDIATE transaction on `poller_schedule`, so two processes on one
registry (two TUIs, a watcher and a launcher) never both make it. Results go to the registry's
`slurm_jobs` cache, which every view reads; then the runs are reconciled with Slurm's view (the rules
are pure functions in slurmml.core.reconcile; this module claims, calls, reads the job logs they need
and stores):

- a queued or running job moves its run to QUEUED or RUNNING; a requeue (squeue's RestartCnt) counts
  in runs.restarts and sends the run back to QUEUED;
- a job Slurm says has ended gives its run Slurm's final state when the run recorded none, or when the
  run's own end is FAILED/LOST and Slurm knows better (TIMEOUT, OUT_OF_MEMORY, CANCELLED, NODE_FAIL,
  PREEMPTED): the run's own COMPLETED is never overridden, and its own FAILED agrees with Slurm's;
- a job gone from squeue that sacct has no final record of, `lost_grace_s` after it left (sacct lags
  the controller), makes its run LOST with the reason.
Without accounting (sacct: "Slurm accounting storage is disabled") the poller warns once and goes on
with squeue and the runs' own end records.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from slurmml.core import reconcile
from slurmml.core.reconcile import RESULT_GRACE_S, SlurmView
from slurmml.core.states import FINAL_STATES
from slurmml.registry import jobs
from slurmml.slurm.accounting import (
    SACCT_REPORT_FIELDS, JobRecord, parse_sacct_report, sacct_report_command, unknown_sacct_field,
)
from slurmml.slurm.commands import CommandResult, run_command
from slurmml.slurm.parse import SQUEUE_ARGV, memory_kill_line, parse_squeue

MIN_SQUEUE_INTERVAL_S = 5.0
MIN_SACCT_INTERVAL_S = 5.0
BACKOFF_MAX_S = 300.0
CALL_TIMEOUT_S = 30.0  # run_command's own limit: a claimed call holds the schedule this long at most
FOLLOW_UP_S = 600.0  # runs that ended this recently still get sacct's record (elapsed, memory, ...)
ACCOUNTING_RECHECK_S = 3600.0
SINCE_MARGIN_S = 300.0  # --starttime this long before the oldest run was recorded (clock skew)
ACCOUNTING_WINDOW_S = 7 * 86400  # runs that ended this recently without sacct's record are asked for it unprompted
LOG_TAIL_BYTES = 16384  # where slurmstepd's memory-kill line is: the end of the job's stderr

ACCOUNTING_OFF_MARKS = ("accounting storage is disabled", "command not found")


def sacct_id(job_id: str) -> str:
    """What sacct is asked for: an array task by its array's id (one id covers every task), others as they are."""
    return job_id.split("_", 1)[0]


def accounting_disabled(result: CommandResult) -> bool:
    text = f"{result.stderr}\n{result.stdout}".lower()
    return not result.ok and any(words in text for words in ACCOUNTING_OFF_MARKS)


def user_name(uid: str) -> Optional[str]:
    """The name of a uid in this machine's user database (who cancelled a job), None if it has none."""
    try:
        import pwd

        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ImportError):
        return None


def read_memory_kill(log_path: Optional[str]) -> Optional[str]:
    """The memory-kill line in the end of a job's stderr file, if it has one (and can be read)."""
    if not log_path:
        return None
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - LOG_TAIL_BYTES))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    return memory_kill_line(tail)


def _last(seen: Optional[jobs.Mark]) -> Optional[float]:
    return seen.last if seen is not None else None


@dataclass
class PollReport:
    """What one poll() did."""

    squeue: bool = False  # squeue was called
    sacct: int = 0  # sacct calls made (a retry without a field this sacct refuses counts too)
    answered: int = 0  # calls that succeeded
    changes: dict[str, str] = field(default_factory=dict)  # run id -> new state
    failed_calls: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pruned: list[tuple[str, str]] = field(default_factory=list)  # (run id, reason): the early-stopping round's losers


def _warn(message: str) -> None:
    print(f"slurmml: warning: {message}", file=sys.stderr)


class Poller:
    def __init__(
        self,
        registry: Any,
        run: Callable[..., CommandResult] = run_command,
        clock: Callable[[], float] = time.time,
        squeue_interval_s: float = 10.0,
        sacct_interval_s: float = 60.0,
        sacct_chunk: int = 500,
        lost_grace_s: Optional[float] = None,
        result_grace_s: float = RESULT_GRACE_S,
        warn: Callable[[str], None] = _warn,
    ) -> None:
        self.registry = registry
        self.run, self.clock, self.warn = run, clock, warn
        self.squeue_interval_s = max(MIN_SQUEUE_INTERVAL_S, float(squeue_interval_s))
        self.sacct_interval_s = max(MIN_SACCT_INTERVAL_S, float(sacct_interval_s))
        self.sacct_chunk = max(1, int(sacct_chunk))
        # long enough for slurmdbd's lag and for at least two sacct calls after the job left the queue
        self.lost_grace_s = lost_grace_s if lost_grace_s is not None else max(180.0, 2 * self.sacct_interval_s + 60)
        self.result_grace_s = result_grace_s
        self._warned_accounting = False
        self._no_targets_until = float("-inf")  # local: no sacct targets found lately, do not look again yet
        self._quiet_until = float("-inf")  # local: no runs to follow lately, do not look again yet
        self._no_rules_until = float("-inf")  # local: no sweep with an early-stopping rule lately

    # -- the schedule ------------------------------------------------------------------------------------
    def _allowed(self, call: str, now: float) -> bool:
        seen = jobs.mark(self.registry, call)
        return seen is None or seen.next_allowed is None or now >= seen.next_allowed

    def accounting_off(self) -> bool:
        return jobs.mark(self.registry, "accounting.off") is not None

    # -- one round ---------------------------------------------------------------------------------------
    def poll(self, wanted: Iterable[str] = ()) -> PollReport:
        """One round. `wanted`: ids of runs a view is about to show; those that ended without sacct's record
        (at any age) are asked for along with the rest, within the same schedule."""
        report = PollReport()
        now = self.clock()
        wanted = list(wanted)
        self._early_stop(now, report)
        if now < self._quiet_until:
            return report  # nothing to follow a moment ago
        squeue_due = self._allowed("squeue", now)
        sacct_due = now >= self._no_targets_until and self._allowed("sacct", now)
        if not (squeue_due or sacct_due):
            return report  # the common case in a UI loop: indexed reads, no write lock
        runs = jobs.tracked_runs(self.registry, ended_since=now - FOLLOW_UP_S,
                                 unaccounted_since=now - ACCOUNTING_WINDOW_S)
        if wanted:
            known = {r.id for r in runs}
            runs += [r for r in jobs.runs_by_id(self.registry, wanted).values()
                     if r.job_id and r.id not in known and r.final]
        active = [r for r in runs if not r.final]
        if not active and (not runs or not sacct_due):
            self._quiet_until = now + MIN_SQUEUE_INTERVAL_S
            return report
        if squeue_due and active and jobs.claim_call(self.registry, "squeue", now, self.squeue_interval_s + CALL_TIMEOUT_S):
            self._squeue(now, runs, report)
        if self._allowed("sacct", self.clock()) and (report.squeue or self.clock() >= self._no_targets_until):
            self._sacct(runs, report)
        if report.answered or report.sacct:
            if self.accounting_off():
                self._warn_accounting_once(report)
            self._reconcile(runs, report)
        return report

    def _early_stop(self, now: float, report: PollReport) -> None:
        """The early-stopping round (slurmml.control.pruning), on the shared schedule: once per squeue interval
        for all watchers of this registry, and only while a sweep with a rule has a run active."""
        if now < self._no_rules_until or not self._allowed("early_stop", now):
            return
        if not (self.registry.watched_sweeps(getpass.getuser()) or self.registry.stopping_prunings()):
            self._no_rules_until = now + MIN_SQUEUE_INTERVAL_S
            return
        if not jobs.claim_call(self.registry, "early_stop", now, self.squeue_interval_s):
            return
        from slurmml.control.pruning import prune_round

        report.pruned = prune_round(self.registry, now, run=self.run, warn=self.warn).pruned

    def _squeue(self, started: float, runs: list[jobs.TrackedRun], report: PollReport) -> None:
        report.squeue = True
        result = self.run(list(SQUEUE_ARGV))
        now = self.clock()
        if not result.ok:
            delay = jobs.record_call(self.registry, "squeue", started, now, False, self.squeue_interval_s, BACKOFF_MAX_S)
            report.failed_calls.append(f"squeue exited {result.returncode}: {result.stderr.strip()[:300]} "
                                       f"(next try in {delay:.0f} s)")
            return
        known = {r.job_id for r in runs}
        seen = [rec for rec in parse_squeue(result.stdout, updated=started) if rec.job_id in known]
        cached = jobs.cached_records(self.registry, (rec.job_id for rec in seen))
        self.registry.store_job_records([reconcile.merge_squeue(cached.get(rec.job_id), rec) for rec in seen])
        jobs.record_call(self.registry, "squeue", started, now, True, self.squeue_interval_s, BACKOFF_MAX_S)
        report.answered += 1

    def _sacct(self, runs: list[jobs.TrackedRun], report: PollReport) -> None:
        now = self.clock()
        off = jobs.mark(self.registry, "accounting.off")
        if off is not None and (off.next_allowed is None or now < off.next_allowed):
            self._warn_accounting_once(report)
            return
        last_squeue = _last(jobs.mark(self.registry, "squeue.ok"))  # before the cache: a squeue may land between
        cached = jobs.cached_records(self.registry, (r.job_id for r in runs))
        targets = reconcile.sacct_targets(runs, cached, last_squeue)
        if not targets:
            self._no_targets_until = now + MIN_SQUEUE_INTERVAL_S
            return
        ids: dict[str, None] = {}  # ordered: the most urgent first
        chosen: list[jobs.TrackedRun] = []
        for run in targets:
            sid = sacct_id(run.job_id)
            if sid not in ids:
                if len(ids) == self.sacct_chunk:
                    continue  # next time
                ids[sid] = None
            chosen.append(run)
        oldest = min((r.created or r.queued_at or now) for r in chosen) - SINCE_MARGIN_S
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(oldest))
        if not jobs.claim_call(self.registry, "sacct", now, self.sacct_interval_s + CALL_TIMEOUT_S):
            return
        dropped = [name.split(".", 2)[2] for name in jobs.marks(self.registry, "sacct.drop.")]
        fields = [f for f in SACCT_REPORT_FIELDS if f not in dropped]
        while True:
            report.sacct += 1
            result = self.run(sacct_report_command(list(ids), since, fields))
            refused = None if result.ok else unknown_sacct_field(result.stderr)
            if refused and refused in fields and refused != "JobID":
                jobs.set_mark(self.registry, f"sacct.drop.{refused}", now)  # once for every process on this registry
                fields = [f for f in fields if f != refused]
                continue
            break
        finished = self.clock()
        if accounting_disabled(result):
            if off is not None:
                jobs.set_mark(self.registry, "accounting.off", off.last, finished + ACCOUNTING_RECHECK_S)
            else:
                jobs.set_mark(self.registry, "accounting.off", finished, finished + ACCOUNTING_RECHECK_S)
            jobs.postpone_call(self.registry, "sacct", finished + ACCOUNTING_RECHECK_S)
            self._warn_accounting_once(report)
            return
        if not result.ok:
            delay = jobs.record_call(self.registry, "sacct", now, finished, False, self.sacct_interval_s, BACKOFF_MAX_S)
            report.failed_calls.append(f"sacct exited {result.returncode}: {result.stderr.strip()[:300]} "
                                       f"(next try in {delay:.0f} s)")
            return
        if off is not None:
            jobs.clear_mark(self.registry, "accounting.off")
        known = {r.job_id for r in runs}
        records = [rec for rec in parse_sacct_report(result.stdout, fields, updated=now) if rec.job_id in known]
        # ended runs sacct knows nothing of: said so (state None), so that they are not asked for again unprompted
        # (a view that shows one still asks)
        records += [JobRecord(job_id=job_id, state=None, source="sacct", updated=now)
                    for job_id in reconcile.unknown_to_sacct(chosen, {rec.job_id for rec in records}, now)]
        self._store_sacct(records, active={r.job_id for r in runs if not r.final})
        jobs.record_call(self.registry, "sacct", now, finished, True, self.sacct_interval_s, BACKOFF_MAX_S)
        report.answered += 1

    def _store_sacct(self, records: list[JobRecord], active: set[str]) -> None:
        cached = jobs.cached_records(self.registry, (rec.job_id for rec in records))
        last_squeue = _last(jobs.mark(self.registry, "squeue.ok"))
        # a squeue that started this recently still describes the queue (the next one is due, or under way)
        recent = (last_squeue if last_squeue is not None
                  and self.clock() - last_squeue <= 2 * self.squeue_interval_s + CALL_TIMEOUT_S else None)
        merged = [reconcile.merge_sacct(cached.get(rec.job_id), rec, rec.job_id in active, recent) for rec in records]
        self.registry.store_job_records([rec for rec in merged if rec is not None])

    def _warn_accounting_once(self, report: PollReport) -> None:
        if not self._warned_accounting:
            self._warned_accounting = True
            message = ("sacct says this cluster keeps no accounting: run states come from squeue and the runs' own "
                       "end records (a job killed from outside shows as LOST, not TIMEOUT or CANCELLED)")
            report.warnings.append(message)
            self.warn(message)

    # -- runs follow Slurm ------------------------------------------------------------------------------
    def _reconcile(self, runs: list[jobs.TrackedRun], report: PollReport) -> None:
        now = self.clock()
        cached = jobs.cached_records(self.registry, (r.job_id for r in runs))
        view = SlurmView(
            cached=cached, now=now, last_squeue=_last(jobs.mark(self.registry, "squeue.ok")),
            last_sacct=_last(jobs.mark(self.registry, "sacct.ok")), accounting_off=self.accounting_off(),
            # each job log read once, for the few runs whose outcome it may decide
            memory_kills={run.id: line for run in runs if reconcile.needs_memory_check(run, cached.get(run.job_id))
                          and (line := read_memory_kill(run.log_path))},
        )
        plan = reconcile.plan(runs, view, self.lost_grace_s)
        self._apply(plan.follow, "squeue", now, report)
        if not plan.settle:
            return
        self.registry.ingest()  # the runs' own end records first: they are never overridden by a guess
        fresh = jobs.runs_by_id(self.registry, (run.id for run, _ in plan.settle))
        uids = {uid for _, rec in plan.settle if rec is not None and (uid := reconcile.canceller_uid(rec.reason))}
        names = {uid: name for uid in uids if (name := user_name(uid))}
        changes = reconcile.settle(plan.settle, fresh, view, self.result_grace_s, names)
        self._apply(changes, "squeue" if view.accounting_off else "sacct", now, report)

    def _apply(self, changes: list[reconcile.RunChange], source: str, now: float, report: PollReport) -> None:
        applied = jobs.apply_changes(self.registry, changes,
                                     source=source, now=now)
        for change in applied:
            report.changes[change.run_id] = change.state


def catch_up(registry: Any, sweep_ids: Iterable[str] = (), run_ids: Iterable[str] = (),
             warn: Callable[[str], None] = _warn) -> PollReport:
    """What every command that shows runs does once it has ingested: one round of the shared poller, if its
    schedule allows a call now, that also asks sacct for the shown runs (these sweeps', and these) that ended
    without its record, however long ago. A view shows Slurm's word, not a guess: no second polling path."""
    wanted = list(run_ids) + jobs.slurm_run_ids(registry, sweep_ids)
    report = Poller(registry, warn=warn).poll(wanted=wanted)
    for failure in report.failed_calls:
        warn(failure)
    return report


def poll_until_final(poller: Poller, run_ids: Iterable[str], timeout_s: float, sleep: Callable[[float], None] = time.sleep,
                     tick_s: float = 1.0) -> dict[str, str]:
    """Poll (as often as the schedule allows) until every run in run_ids is final; their states by id."""
    ids = list(run_ids)
    deadline = poller.clock() + timeout_s
    while True:
        poller.poll()
        states = {r.id: r.state for r in jobs.runs_by_id(poller.registry, ids).values()}
        if all(state in FINAL_STATES for state in states.values()) or poller.clock() >= deadline:
            return states
        sleep(tick_s)
