"""The one poller that talks to Slurm for every view (CLI, launcher in wait mode, TUI): DESIGN rule 2.

Each `poll()` does at most what the schedule shared through the registry allows:
- one `squeue --me` per interval (default 10 s, never below 5 s) for all of the user's active jobs;
- one `sacct` per interval (default 60 s) for jobs that left squeue, `--starttime`-bounded, at most
  `sacct_chunk` job ids per call (array tasks are asked for by their array's id);
- on a refusal or a timeout the call backs off, doubling up to 5 minutes; a success resets it.
A call is claimed inside one BEGIN IMMEDIATE transaction on `poller_schedule`, so two processes on one
registry (two TUIs, a watcher and a launcher) never both make it. Results go to the registry's
`slurm_jobs` cache, which every view reads; then the runs are reconciled with Slurm's view:

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

import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Optional

from slurmml.registry import jobs
from slurmml.core.states import FINAL_STATES, NOT_STARTED_STATES, SLURM_FINAL, SLURM_PENDING, SLURM_RUNNING, run_state_of
from slurmml.slurm.accounting import (
    SACCT_REPORT_FIELDS, JobRecord, parse_sacct_report, parse_sacct_time, sacct_report_command, unknown_sacct_field,
)
from slurmml.slurm.commands import CommandResult, run_command
from slurmml.slurm.parse import _expand_array_id

MIN_SQUEUE_INTERVAL_S = 5.0
MIN_SACCT_INTERVAL_S = 5.0
BACKOFF_MAX_S = 300.0
CALL_TIMEOUT_S = 30.0  # run_command's own limit: a claimed call holds the schedule this long at most
RESULT_GRACE_S = 60.0  # Slurm says COMPLETED: the run's own end record may still be on its way (NFS)
SACCT_LAG_S = 10.0  # slurmdbd lags the controller by seconds (tests/data/README.md)
FOLLOW_UP_S = 600.0  # runs that ended this recently still get sacct's record (elapsed, memory, ...)
ACCOUNTING_RECHECK_S = 3600.0
SINCE_MARGIN_S = 300.0  # --starttime this long before the oldest run was recorded (clock skew)

# squeue -O: one line per array task, nothing truncated (no field widths), restart count and submit time
SQUEUE_FIELDS = "JobArrayID:|,State:|,Reason:|,RestartCnt:|,SubmitTime:|"
SQUEUE_ARGV = ("squeue", "--noheader", "--array", "--me", f"--Format={SQUEUE_FIELDS}")

ACCOUNTING_OFF_MARKS = ("accounting storage is disabled", "command not found")

ACCOUNTING_WINDOW_S = 7 * 86400  # runs that ended this recently without sacct's record are asked for it unprompted
# ended from outside: Slurm knows better than a run that recorded FAILED (or nothing)
KILLED = {"TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "PREEMPTED"}
# what slurmstepd writes to the job's stderr when JobAcctGatherParams=OverMemoryKill (or cgroups) kill it
MEMORY_KILL_WORDS = ("exceeded memory limit", "exceeded job memory limit", "oom-kill", "out of memory")


def parse_squeue_records(text: str, updated: Optional[float] = None) -> list[JobRecord]:
    """Rows of `squeue --noheader --array --Format=SQUEUE_FIELDS` (`4697_0|PENDING|BeginTime|1|2026-...|`)."""
    records = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 2 or not fields[0]:
            continue
        reason = fields[2].strip() if len(fields) > 2 else ""
        try:
            restarts = int(fields[3]) if len(fields) > 3 and fields[3].strip() else 0
        except ValueError:
            restarts = 0
        submit = parse_sacct_time(fields[4]) if len(fields) > 4 else None
        for job_id in _expand_array_id(fields[0].strip()):
            records.append(JobRecord(job_id=job_id, state=fields[1].strip(), reason="" if reason == "None" else reason,
                                     restarts=restarts, submit=submit, source="squeue", updated=updated))
    return records


def sacct_id(job_id: str) -> str:
    """What sacct is asked for: an array task by its array's id (one id covers every task), others as they are."""
    return job_id.split("_", 1)[0]


def accounting_disabled(result: CommandResult) -> bool:
    text = f"{result.stderr}\n{result.stdout}".lower()
    return not result.ok and any(words in text for words in ACCOUNTING_OFF_MARKS)


def _who(reason: str) -> str:
    """`by 1000` -> `by alice (uid 1000)`."""
    words = reason.split()
    if len(words) == 2 and words[0] == "by" and words[1].isdigit():
        try:
            import pwd

            return f"by {pwd.getpwuid(int(words[1])).pw_name} (uid {words[1]})"
        except (KeyError, ImportError):
            return f"by uid {words[1]}"
    return reason


def memory_kill_line(log_path: Optional[str], max_bytes: int = 16384) -> Optional[str]:
    """The line in the end of a job's stderr where Slurm says it killed the job for its memory, if any."""
    if not log_path:
        return None
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - max_bytes))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in tail.splitlines():  # the first one names the step and the sizes
        if any(words in line.lower() for words in MEMORY_KILL_WORDS):
            return line.strip()
    return None


def slurm_outcome(record: JobRecord, log_path: Optional[str] = None) -> tuple[str, str]:
    """A final Slurm record as (registry state, reason): `TIMEOUT`, `Slurm: TIMEOUT after 63 s (limit 60 s)`."""
    state = run_state_of(record.state)
    words = f"Slurm job {record.job_id}: {record.state}"
    if state in {"FAILED", "CANCELLED"} and record.signal == 9:
        # OverMemoryKill (no cgroups) reports FAILED 0:9, with slurmstepd's words in the job's stderr
        line = memory_kill_line(log_path)
        if line:
            return "OUT_OF_MEMORY", f"{words} (signal 9) after going over its memory: {line}"
        if record.max_rss_mb and record.req_mem_mb and record.max_rss_mb >= record.req_mem_mb:
            return "OUT_OF_MEMORY", (f"{words} (signal 9) after going over its memory: MaxRSS "
                                     f"{record.max_rss_mb:.0f} MB, requested {record.req_mem_mb:.0f} MB")
    if state == "FAILED":
        if record.signal:
            return state, f"{words}, killed by signal {record.signal}"
        return state, f"{words}, exit code {record.exit_code}" if record.exit_code is not None else words
    if state == "CANCELLED":
        return state, f"{words} {_who(record.reason)}".rstrip()
    if state == "TIMEOUT":
        limit = f" (limit {record.timelimit_s} s)" if record.timelimit_s else ""
        return state, f"{words} after {record.elapsed_s} s{limit}" if record.elapsed_s is not None else words + limit
    if state in {"NODE_FAIL", "PREEMPTED"} and record.node_list:
        return state, f"{words} on {record.node_list}"
    return state, words


@dataclass
class PollReport:
    """What one poll() did."""

    squeue: bool = False  # squeue was called
    sacct: int = 0  # sacct calls made (a retry without a field this sacct refuses counts too)
    answered: int = 0  # calls that succeeded
    changes: dict[str, str] = field(default_factory=dict)  # run id -> new state
    failed_calls: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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

    # -- the schedule ------------------------------------------------------------------------------------
    def next_call_in(self) -> float:
        """Seconds until the schedule allows the next Slurm call (0: now)."""
        now = self.clock()
        waits = [max(0.0, (m.next_allowed or 0) - now) if m else 0.0
                 for m in (jobs.mark(self.registry, "squeue"), jobs.mark(self.registry, "sacct"))]
        return min(waits)

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
        seen = [rec for rec in parse_squeue_records(result.stdout, updated=started) if rec.job_id in known]
        cached = jobs.cached_records(self.registry, (rec.job_id for rec in seen))
        merged = []
        for rec in seen:
            old = cached.get(rec.job_id)
            if old is not None and _earlier_execution(old, rec):  # requeued: the cached figures were another execution's
                rec = replace(rec, restarts=max(rec.restarts, old.restarts or 0))
            elif old is not None:  # keep what sacct knew (times, limits, resources)
                rec = replace(old, state=rec.state, reason=rec.reason, submit=rec.submit or old.submit,
                              restarts=max(rec.restarts, old.restarts or 0), source="squeue", updated=started)
            merged.append(rec)
        self.registry.store_job_records(merged)
        jobs.record_call(self.registry, "squeue", started, now, True, self.squeue_interval_s, BACKOFF_MAX_S)
        report.answered += 1

    def _sacct_targets(self, runs: list[jobs.TrackedRun], now: float) -> list[jobs.TrackedRun]:
        """Runs with no final sacct record whose job left squeue, or that recorded their own end (whatever
        squeue last said: once a run has ended nobody may poll squeue again): active runs first, oldest first."""
        squeue_ok = jobs.mark(self.registry, "squeue.ok")
        last_squeue = squeue_ok.last if squeue_ok is not None and squeue_ok.last is not None else None
        cached = jobs.cached_records(self.registry, (r.job_id for r in runs))
        active, ended = [], []
        for run in runs:
            rec = cached.get(run.job_id)
            if rec is not None and rec.source == "sacct" and rec.state in SLURM_FINAL:
                continue  # sacct already said how it ended
            if run.final:
                ended.append(run)
                continue
            if last_squeue is None:
                continue  # an active run has left the queue only if a squeue has not listed it
            if rec is not None and rec.source == "squeue" and (rec.updated or 0) >= last_squeue:
                continue  # in the last squeue
            queued = run.queued_at if run.queued_at is not None else run.created
            if rec is None and (queued is None or queued >= last_squeue):
                continue  # queued after the last squeue started: not missed by it
            active.append(run)
        key = lambda r: (r.queued_at or r.created or 0)  # noqa: E731
        return sorted(active, key=key) + sorted(ended, key=key)

    def _sacct(self, runs: list[jobs.TrackedRun], report: PollReport) -> None:
        now = self.clock()
        off = jobs.mark(self.registry, "accounting.off")
        if off is not None and (off.next_allowed is None or now < off.next_allowed):
            self._warn_accounting_once(report)
            return
        targets = self._sacct_targets(runs, now)
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
        answered = {rec.job_id for rec in records}
        # an ended run sacct knows nothing of, well after its end: say so (state None), so that it is not asked
        # for again unprompted (a view that shows it still asks); a purged or never-accounted job
        records += [JobRecord(job_id=run.job_id, state=None, source="sacct", updated=now) for run in chosen
                    if run.final and run.job_id not in answered and (run.ended or now) + SACCT_LAG_S <= now]
        self._store_sacct(records, active={r.job_id for r in runs if not r.final})
        jobs.record_call(self.registry, "sacct", now, finished, True, self.sacct_interval_s, BACKOFF_MAX_S)
        report.answered += 1

    def _store_sacct(self, records: list[JobRecord], active: set[str]) -> None:
        cached = jobs.cached_records(self.registry, (rec.job_id for rec in records))
        squeue_ok = jobs.mark(self.registry, "squeue.ok")
        recent_squeue = (squeue_ok.last if squeue_ok is not None and squeue_ok.last is not None
                         and self.clock() - squeue_ok.last <= 2 * self.squeue_interval_s + CALL_TIMEOUT_S else None)
        merged = []
        for rec in records:
            old = cached.get(rec.job_id)
            if old is not None and old.source == "squeue" and _earlier_execution(rec, old):
                continue  # sacct (lagging) still describes the execution a requeue ended: squeue has seen the next
            if (rec.state in SLURM_FINAL and rec.job_id in active and recent_squeue is not None and old is not None
                    and old.source == "squeue" and (old.updated or 0) >= recent_squeue):
                # the last squeue still listed the job and its run recorded no end: the queue is newer than the
                # accounting database, and right after a requeue sacct calls the killed execution FAILED with
                # the Submit squeue still shows (COMPLETING, RestartCnt 1). The final word counts once a squeue
                # no longer lists the job (the run is then sacct's target again).
                continue
            if old is not None and rec.state is not None:
                rec = replace(rec, restarts=max(rec.restarts, old.restarts or 0), submit=rec.submit or old.submit)
                if rec.state not in SLURM_FINAL and old.source == "squeue":
                    # sacct lags: keep squeue's word (and when squeue last saw the job), fill in what it lacks
                    filled = {name: value for name, value in vars(rec).items()
                              if getattr(old, name) in (None, "") and value not in (None, "")}
                    rec = replace(old, **filled)
            merged.append(rec)
        self.registry.store_job_records(merged)

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
        squeue_ok = jobs.mark(self.registry, "squeue.ok")
        sacct_ok = jobs.mark(self.registry, "sacct.ok")
        accounting_off = self.accounting_off()
        follow: list[jobs.RunChange] = []
        to_settle: list[jobs.TrackedRun] = []
        for run in runs:
            rec = cached.get(run.job_id)
            current = (rec is not None and rec.source == "squeue" and squeue_ok is not None
                       and (rec.updated or 0) >= (squeue_ok.last or 0))
            if rec is not None and rec.state in SLURM_FINAL:
                to_settle.append(run)
            elif run.final:
                if current and rec.restarts > run.restarts and rec.state in SLURM_PENDING | SLURM_RUNNING:
                    # ended, then requeued by Slurm (sacct can call the killed execution FAILED first)
                    state = "QUEUED" if rec.state in SLURM_PENDING else "RUNNING"
                    follow.append(jobs.RunChange(run.id, state, (run.state,), reopen=True))
                continue
            elif current:
                change = self._follow(run, rec)
                if change:
                    follow.append(change)
            else:
                to_settle.append(run)  # gone from squeue without a final record: LOST, after the grace period
        for change in jobs.apply_changes(self.registry, follow, source="squeue", now=now):
            report.changes[change.run_id] = change.state
        if to_settle:
            self._settle(to_settle, cached, now, squeue_ok, sacct_ok, accounting_off, report)

    @staticmethod
    def _follow(run: jobs.TrackedRun, rec: JobRecord) -> Optional[jobs.RunChange]:
        """A job in squeue: QUEUED while pending, RUNNING once started; a requeue sends a running run back.

        runs.restarts is not raised here: ingest counts each start the run records after its first, and
        the restarted task records one. Slurm's count is applied when the run's final state is settled.
        """
        requeued = rec.restarts > run.restarts
        if rec.state in SLURM_PENDING:
            if run.state == "SUBMITTING" or (run.state == "RUNNING" and requeued):
                return jobs.RunChange(run.id, "QUEUED", (run.state,))
        elif rec.state in SLURM_RUNNING:
            if run.state in NOT_STARTED_STATES:
                return jobs.RunChange(run.id, "RUNNING", (run.state,))
        return None

    def _settle(self, candidates: list[jobs.TrackedRun], cached: dict[str, JobRecord], now: float,
                squeue_ok: Optional[jobs.Mark], sacct_ok: Optional[jobs.Mark], accounting_off: bool,
                report: PollReport) -> None:
        decisions: list[tuple[jobs.TrackedRun, Optional[JobRecord]]] = []
        for run in candidates:
            rec = cached.get(run.job_id)
            if rec is not None and rec.state in SLURM_FINAL:
                if run.final and (not self._slurm_knows_better(run, rec)
                                  or slurm_outcome(rec, run.log_path)[0] == run.state):
                    continue
                decisions.append((run, rec))
            elif self._lost(run, rec, now, squeue_ok, sacct_ok, accounting_off):
                decisions.append((run, None))
        if not decisions:
            return
        self.registry.ingest()  # the runs' own end records first: they are never overridden by a guess
        fresh = jobs.runs_by_id(self.registry, (run.id for run, _ in decisions))
        changes = []
        for old, rec in decisions:
            run = fresh.get(old.id)
            if run is None:
                continue
            if rec is None:
                if not run.final:
                    changes.append(jobs.RunChange(run.id, "LOST", (run.state,),
                                                  error=self._lost_reason(run, cached.get(run.job_id), now, accounting_off)))
                continue
            if run.final and not self._slurm_knows_better(run, rec):
                continue
            state, reason = slurm_outcome(rec, run.log_path)
            if state == run.state:
                continue  # Slurm agrees with what the run recorded
            if state == "COMPLETED":
                if not run.final and now - (rec.end or rec.updated or now) < self.result_grace_s:
                    continue  # the run's end record may still be on its way
                reason = f"{reason}; the run recorded no end"
            if run.final and run.error:
                reason = f"{reason}\n(the run itself recorded {run.state}: {run.error.strip().splitlines()[-1]})"
            changes.append(jobs.RunChange(run.id, state, (run.state,), error=reason,
                                          exit_code=rec.exit_code if state == "FAILED" else None,
                                          restarts=rec.restarts or None, ended=rec.end))
        source = "squeue" if accounting_off else "sacct"
        for change in jobs.apply_changes(self.registry, changes, source=source, now=now):
            report.changes[change.run_id] = change.state

    @staticmethod
    def _slurm_knows_better(run: jobs.TrackedRun, rec: JobRecord) -> bool:
        """A run that recorded its own end keeps it, except: killed from outside beats the run's FAILED,
        and any final word from Slurm beats LOST (a guess made when Slurm had said nothing)."""
        state = run_state_of(rec.state)
        if run.state == "LOST":
            return True
        if run.state == "FAILED":
            return state in KILLED or (state == "FAILED" and rec.signal == 9)  # 9: maybe a memory kill
        return False

    def _lost(self, run: jobs.TrackedRun, rec: Optional[JobRecord], now: float, squeue_ok: Optional[jobs.Mark],
              sacct_ok: Optional[jobs.Mark], accounting_off: bool) -> bool:
        if run.final or squeue_ok is None or squeue_ok.last is None:
            return False
        gone_since = self._gone_since(run, rec)
        if gone_since is None or gone_since >= squeue_ok.last or now - gone_since < self.lost_grace_s:
            return False
        if accounting_off:
            return True
        # sacct must have been asked (successfully) well after the job left the queue
        return sacct_ok is not None and sacct_ok.last is not None and sacct_ok.last >= gone_since + SACCT_LAG_S

    @staticmethod
    def _gone_since(run: jobs.TrackedRun, rec: Optional[JobRecord]) -> Optional[float]:
        """The last time squeue listed the job, or when it was queued if squeue never did."""
        if rec is not None and rec.source == "squeue" and rec.updated is not None:
            return rec.updated
        return run.queued_at if run.queued_at is not None else run.created

    def _lost_reason(self, run: jobs.TrackedRun, rec: Optional[JobRecord], now: float, accounting_off: bool) -> str:
        gone = self._gone_since(run, rec)
        ago = f" {now - gone:.0f} s ago" if gone is not None else ""
        if accounting_off:
            return (f"Slurm job {run.job_id} left the queue{ago} and the run recorded no end; this cluster keeps "
                    f"no accounting (sacct), so how it ended is unknown")
        if rec is not None and rec.source == "sacct":
            return (f"Slurm job {run.job_id} left the queue{ago}, but sacct still says {rec.state} "
                    f"(a runaway record) and the run recorded no end")
        return f"Slurm job {run.job_id} left the queue{ago}; sacct has no record of it and the run recorded no end"


def _earlier_execution(first: JobRecord, then: JobRecord) -> bool:
    """Whether `first` describes an execution of the job before `then`'s: a requeue gives the job a new submit
    time (squeue's SubmitTime and sacct's Submit both show it; tests/data/poller/README.md)."""
    return first.submit is not None and then.submit is not None and first.submit < then.submit


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


def active_job_count(registry: Any) -> int:
    """Runs with a Slurm job that have not reached a final state."""
    final = ",".join("?" * len(FINAL_STATES))
    return registry.conn.execute(f"SELECT count(*) FROM runs WHERE slurm_job_id IS NOT NULL AND state NOT IN ({final})",
                                 FINAL_STATES).fetchone()[0]


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
