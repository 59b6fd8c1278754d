"""How the poller decides: Slurm's view of the jobs and the runs' own records in, changes out.

Pure. What a decision needs comes in as data: the runs the poller follows (registry.jobs.TrackedRun), the
cached job records (slurm.accounting.JobRecord), when the last squeue and sacct that answered started,
the clock, and the few lines the loop read beforehand (a job's stderr, the user database). Nothing here
reads a file, the registry or Slurm, so each rule is tested on its own (tests/unit/test_reconcile.py);
slurmml.poller.loop claims the calls, makes them, stores the results and applies the changes.

The rules, in the order a job meets them:
- squeue's and sacct's answers are merged into the cache (merge_squeue, merge_sacct): a requeue gives the
  job a new submit time, and sacct lags the controller, so neither may undo what the other saw later;
- a queued or running job moves its run to QUEUED or RUNNING; a requeue sends it back to QUEUED, and
  reopens a run that had ended (follow_queue, plan);
- a final record settles the run, unless the run recorded its own end and Slurm does not know better
  (slurm_knows_better); a job gone from squeue that sacct has no final record of makes its run LOST
  once the grace period is over and a sacct has answered well after the job left (lost); the decisions
  are made again on the runs re-read after their own end records were ingested (settle).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence

from slurmml.core.states import NOT_STARTED_STATES, SLURM_FINAL, SLURM_PENDING, SLURM_RUNNING, run_state_of
from slurmml.core.text import last_line

# A run is a registry.jobs.TrackedRun, a record a slurm.accounting.JobRecord (both from layer 1, passed in).
Run = Any
Record = Any

# Slurm says a job ended, but what the run wrote just before exiting (its end record, its result file) may
# reach the login node later over a network filesystem: wait this long before deciding it wrote none.
RESULT_GRACE_S = 60.0
SACCT_LAG_S = 10.0  # slurmdbd lags the controller by seconds (tests/data/README.md)
# ended from outside: Slurm knows better than a run that recorded FAILED (or nothing)
KILLED = frozenset({"TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "PREEMPTED"})


@dataclass(frozen=True)
class RunChange:
    """Set a run's state, if it is still one of `only_from` (another process may have moved it meanwhile):
    decided here, applied by registry.jobs.apply_changes."""

    run_id: str
    state: str
    only_from: tuple[str, ...]
    error: Optional[str] = None  # replaces the run's error when given
    exit_code: Optional[int] = None  # kept when the run has its own
    restarts: Optional[int] = None  # raised to at least this
    ended: Optional[float] = None  # kept when the run has its own
    reopen: bool = False  # a final run running again (Slurm requeued it): its end, error and exit code go


@dataclass(frozen=True)
class SlurmView:
    """What the loop knows when it reconciles the runs."""

    cached: Mapping[str, Record]  # job id -> the cache's record of the job
    now: float
    last_squeue: Optional[float]  # start of the last squeue that answered; None: none has
    last_sacct: Optional[float]  # start of the last sacct that answered; None: none has
    accounting_off: bool  # sacct said this cluster keeps no accounting
    # run id -> the line of its job's stderr where Slurm says it killed the job for its memory
    memory_kills: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """The first half of a reconciliation: squeue's word now, the final words once the runs' own end records
    are in (the loop ingests them, re-reads the runs and calls settle)."""

    follow: list[RunChange]  # QUEUED or RUNNING from squeue, requeued runs reopened
    settle: list[tuple[Run, Optional[Record]]]  # Slurm's final record, or None: LOST


# -- merging Slurm's answers into the cache ---------------------------------------------------------------------

def earlier_execution(first: Record, then: Record) -> bool:
    """Whether `first` describes an execution of the job before `then`'s: a requeue gives the job a new submit
    time (squeue's SubmitTime and sacct's Submit both show it; tests/data/poller/README.md)."""
    return first.submit is not None and then.submit is not None and first.submit < then.submit


def in_last_squeue(rec: Optional[Record], last_squeue: Optional[float]) -> bool:
    """Whether the squeue that started at `last_squeue` listed the job: its cached record is that squeue's."""
    return (rec is not None and rec.source == "squeue" and last_squeue is not None
            and (rec.updated or 0) >= last_squeue)


def merge_squeue(old: Optional[Record], new: Record) -> Record:
    """What the cache keeps of a job squeue lists: squeue's state, reason and submit time, with what sacct knew
    of the same execution (times, limits, resources); the restart count never goes down."""
    if old is None:
        return new
    restarts = max(new.restarts, old.restarts or 0)
    if earlier_execution(old, new):  # requeued: the cached figures were another execution's
        return replace(new, restarts=restarts)
    return replace(old, state=new.state, reason=new.reason, submit=new.submit or old.submit, restarts=restarts,
                   source="squeue", updated=new.updated)


def merge_sacct(old: Optional[Record], new: Record, active: bool, listed_since: Optional[float]) -> Optional[Record]:
    """What the cache keeps of sacct's record of a job; None: keep the cached one.

    `active`: the job's run recorded no end. `listed_since`: when the last squeue started, if it answered
    recently enough to describe the queue now (None otherwise).
    """
    if old is not None and old.source == "squeue" and earlier_execution(new, old):
        return None  # sacct (lagging) still describes the execution a requeue ended: squeue has seen the next
    if new.state in SLURM_FINAL and active and in_last_squeue(old, listed_since):
        # the last squeue still listed the job and its run recorded no end: the queue is newer than the
        # accounting database, and right after a requeue sacct calls the killed execution FAILED with
        # the Submit squeue still shows (COMPLETING, RestartCnt 1). The final word counts once a squeue
        # no longer lists the job (the run is then sacct's target again).
        return None
    if old is not None and new.state is not None:
        new = replace(new, restarts=max(new.restarts, old.restarts or 0), submit=new.submit or old.submit)
        if new.state not in SLURM_FINAL and old.source == "squeue":
            # sacct lags: keep squeue's word (and when squeue last saw the job), fill in what it lacks
            filled = {name: value for name, value in vars(new).items()
                      if getattr(old, name) in (None, "") and value not in (None, "")}
            new = replace(old, **filled)
    return new


# -- what sacct is asked about ------------------------------------------------------------------------------------

def sacct_targets(runs: Sequence[Run], cached: Mapping[str, Record], last_squeue: Optional[float]) -> list[Run]:
    """Runs with no final sacct record whose job left squeue, or that recorded their own end (whatever
    squeue last said: once a run has ended nobody may poll squeue again): active runs first, oldest first."""
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
        if in_last_squeue(rec, last_squeue):
            continue
        queued = run.queued_at if run.queued_at is not None else run.created
        if rec is None and (queued is None or queued >= last_squeue):
            continue  # queued after the last squeue started: not missed by it
        active.append(run)
    key = lambda r: (r.queued_at or r.created or 0)  # noqa: E731
    return sorted(active, key=key) + sorted(ended, key=key)


def unknown_to_sacct(asked: Sequence[Run], answered: set[str], now: float) -> list[str]:
    """Job ids of ended runs sacct was asked about and knows nothing of, well after their end (a purged or
    never-accounted job): the cache says so, so that they are not asked for again unprompted."""
    return [run.job_id for run in asked
            if run.final and run.job_id not in answered and (run.ended or now) + SACCT_LAG_S <= now]


# -- Slurm's final word as a run state ----------------------------------------------------------------------------

def canceller_uid(reason: str) -> Optional[str]:
    """The uid in Slurm's `by 1000` (who cancelled the job), if that is what the reason says."""
    words = reason.split()
    if len(words) == 2 and words[0] == "by" and words[1].isdigit():
        return words[1]
    return None


def _named(reason: str, user_names: Optional[Mapping[str, str]]) -> str:
    """`by 1000` -> `by alice (uid 1000)`, or `by uid 1000` for a uid the user database does not know."""
    uid = canceller_uid(reason)
    if uid is None:
        return reason
    name = (user_names or {}).get(uid)
    return f"by {name} (uid {uid})" if name else f"by uid {uid}"


def may_be_memory_kill(record: Record) -> bool:
    """OverMemoryKill (no cgroups) reports FAILED 0:9, with slurmstepd's words in the job's stderr."""
    return run_state_of(record.state) in {"FAILED", "CANCELLED"} and record.signal == 9


def slurm_outcome(record: Record, memory_kill: Optional[str] = None,
                  user_names: Optional[Mapping[str, str]] = None) -> tuple[str, str]:
    """A final Slurm record as (run state, reason): `TIMEOUT`, `Slurm job 12: TIMEOUT after 63 s (limit 60 s)`.

    `memory_kill`: the line of the job's stderr where Slurm says it killed the job for its memory, if any;
    `user_names`: uid -> user name, for who cancelled it.
    """
    state = run_state_of(record.state)
    words = f"Slurm job {record.job_id}: {record.state}"
    if may_be_memory_kill(record):
        if memory_kill:
            return "OUT_OF_MEMORY", f"{words} (signal 9) after going over its memory: {memory_kill}"
        if record.max_rss_mb and record.req_mem_mb and record.max_rss_mb >= record.req_mem_mb:
            return "OUT_OF_MEMORY", (f"{words} (signal 9) after going over its memory: MaxRSS "
                                     f"{record.max_rss_mb:.0f} MB, requested {record.req_mem_mb:.0f} MB")
    if state == "FAILED":
        if record.signal:
            return state, f"{words}, killed by signal {record.signal}"
        return state, f"{words}, exit code {record.exit_code}" if record.exit_code is not None else words
    if state == "CANCELLED":
        return state, f"{words} {_named(record.reason, user_names)}".rstrip()
    if state == "TIMEOUT":
        limit = f" (limit {record.timelimit_s} s)" if record.timelimit_s else ""
        return state, f"{words} after {record.elapsed_s} s{limit}" if record.elapsed_s is not None else words + limit
    if state in {"NODE_FAIL", "PREEMPTED"} and record.node_list:
        return state, f"{words} on {record.node_list}"
    return state, words


def slurm_knows_better(run: Run, rec: Record) -> bool:
    """A run that recorded its own end keeps it, except: killed from outside beats the run's FAILED,
    and any final word from Slurm beats LOST (a guess made when Slurm had said nothing)."""
    state = run_state_of(rec.state)
    if run.state == "LOST":
        return True
    if run.state == "FAILED":
        return state in KILLED or (state == "FAILED" and rec.signal == 9)  # 9: maybe a memory kill
    return False


def needs_memory_check(run: Run, rec: Optional[Record]) -> bool:
    """Whether deciding this run reads its job's stderr: a final record that may be a memory kill, for a
    run that has not ended or whose own end Slurm may correct."""
    return (rec is not None and rec.state in SLURM_FINAL and may_be_memory_kill(rec)
            and (not run.final or slurm_knows_better(run, rec)))


# -- runs follow Slurm ---------------------------------------------------------------------------------------------

def follow_queue(run: Run, rec: Record) -> Optional[RunChange]:
    """A job in squeue: QUEUED while pending, RUNNING once started; a requeue sends a running run back.

    runs.restarts is not raised here: ingest counts each start the run records after its first, and
    the restarted task records one. Slurm's count is applied when the run's final state is settled.
    """
    requeued = rec.restarts > run.restarts
    if rec.state in SLURM_PENDING:
        if run.state == "SUBMITTING" or (run.state == "RUNNING" and requeued):
            return RunChange(run.id, "QUEUED", (run.state,))
    elif rec.state in SLURM_RUNNING:
        if run.state in NOT_STARTED_STATES:
            return RunChange(run.id, "RUNNING", (run.state,))
    return None


def gone_since(run: Run, rec: Optional[Record]) -> Optional[float]:
    """The last time squeue listed the job, or when it was queued if squeue never did."""
    if rec is not None and rec.source == "squeue" and rec.updated is not None:
        return rec.updated
    return run.queued_at if run.queued_at is not None else run.created


def lost(run: Run, rec: Optional[Record], view: SlurmView, lost_grace_s: float) -> bool:
    """An active run whose job left squeue `lost_grace_s` ago without a final record; with accounting, a
    sacct must also have answered well after the job left the queue (sacct lags the controller)."""
    if run.final or view.last_squeue is None:
        return False
    gone = gone_since(run, rec)
    if gone is None or gone >= view.last_squeue or view.now - gone < lost_grace_s:
        return False
    if view.accounting_off:
        return True
    return view.last_sacct is not None and view.last_sacct >= gone + SACCT_LAG_S


def lost_reason(run: Run, rec: Optional[Record], now: float, accounting_off: bool) -> str:
    gone = gone_since(run, rec)
    ago = f" {now - gone:.0f} s ago" if gone is not None else ""
    if accounting_off:
        return (f"Slurm job {run.job_id} left the queue{ago} and the run recorded no end; this cluster keeps "
                f"no accounting (sacct), so how it ended is unknown")
    if rec is not None and rec.source == "sacct":
        return (f"Slurm job {run.job_id} left the queue{ago}, but sacct still says {rec.state} "
                f"(a runaway record) and the run recorded no end")
    return f"Slurm job {run.job_id} left the queue{ago}; sacct has no record of it and the run recorded no end"


def plan(runs: Sequence[Run], view: SlurmView, lost_grace_s: float) -> Plan:
    """squeue's word for the runs whose job the last squeue listed; the runs to settle (a final record, or
    LOST) for the rest."""
    follow: list[RunChange] = []
    settle: list[tuple[Run, Optional[Record]]] = []
    for run in runs:
        rec = view.cached.get(run.job_id)
        current = in_last_squeue(rec, view.last_squeue)
        if rec is not None and rec.state in SLURM_FINAL:
            if run.final and (not slurm_knows_better(run, rec)
                              or slurm_outcome(rec, view.memory_kills.get(run.id))[0] == run.state):
                continue
            settle.append((run, rec))
        elif run.final:
            if current and rec.restarts > run.restarts and rec.state in SLURM_PENDING | SLURM_RUNNING:
                # ended, then requeued by Slurm (sacct can call the killed execution FAILED first)
                state = "QUEUED" if rec.state in SLURM_PENDING else "RUNNING"
                follow.append(RunChange(run.id, state, (run.state,), reopen=True))
        elif current:
            change = follow_queue(run, rec)
            if change:
                follow.append(change)
        elif lost(run, rec, view, lost_grace_s):  # gone from squeue without a final record
            settle.append((run, None))
    return Plan(follow, settle)


def settle(candidates: Sequence[tuple[Run, Optional[Record]]], fresh: Mapping[str, Run], view: SlurmView,
           result_grace_s: float = RESULT_GRACE_S, user_names: Optional[Mapping[str, str]] = None) -> list[RunChange]:
    """The final states of plan's candidates, decided on the runs as re-read (`fresh`, by run id) after their
    own end records were ingested: a run's own end is never overridden by a guess."""
    changes = []
    for old, rec in candidates:
        run = fresh.get(old.id)
        if run is None:
            continue
        if rec is None:
            if not run.final:
                changes.append(RunChange(run.id, "LOST", (run.state,),
                                         error=lost_reason(run, view.cached.get(run.job_id), view.now,
                                                           view.accounting_off)))
            continue
        if run.final and not slurm_knows_better(run, rec):
            continue
        state, reason = slurm_outcome(rec, view.memory_kills.get(run.id), user_names)
        if state == run.state:
            continue  # Slurm agrees with what the run recorded
        if state == "COMPLETED":
            if not run.final and view.now - (rec.end or rec.updated or view.now) < result_grace_s:
                continue  # the run's end record may still be on its way
            reason = f"{reason}; the run recorded no end"
        recorded = last_line(run.error) if run.final else ""
        if recorded:
            reason = f"{reason}\n(the run itself recorded {run.state}: {recorded})"
        changes.append(RunChange(run.id, state, (run.state,), error=reason,
                                 exit_code=rec.exit_code if state == "FAILED" else None,
                                 restarts=rec.restarts or None, ended=rec.end))
    return changes
