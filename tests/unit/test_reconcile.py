"""The poller's decisions (slurmml.core.reconcile) on their own: runs, records and a clock in, changes out.

No registry, no fake Slurm: each test builds the runs and the cached records a poll would have read.
The same rules inside the loop, on recorded Slurm output: tests/unit/test_poller.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from slurmml.core import reconcile
from slurmml.core.reconcile import RunChange, SlurmView
from slurmml.registry.jobs import TrackedRun
from slurmml.slurm.accounting import JobRecord

NOW = 10_000.0
GRACE_S = 180.0  # the poller's default lost grace period at a 60 s sacct interval


def run(state: str = "RUNNING", error: Optional[str] = None, restarts: int = 0, queued_at: float = 1000.0,
        ended: Optional[float] = None) -> TrackedRun:
    return TrackedRun(id="s1-0", sweep_id="s1", job_id="500", state=state, exit_code=None, error=error,
                      restarts=restarts, created=queued_at - 1, queued_at=queued_at, ended=ended, log_path=None)


def sacct(state: str, exit_code: int = 0, signal: int = 0, end: float = NOW - 100, submit: float = 900.0,
          **more) -> JobRecord:
    return JobRecord(job_id="500", state=state, exit_code=exit_code, signal=signal, end=end, submit=submit,
                     source="sacct", updated=NOW - 5, **more)


def squeue(state: str, updated: float, restarts: int = 0, submit: float = 900.0) -> JobRecord:
    return JobRecord(job_id="500", state=state, restarts=restarts, submit=submit, source="squeue", updated=updated)


def view(rec: Optional[JobRecord] = None, now: float = NOW, last_squeue: Optional[float] = NOW - 10,
         last_sacct: Optional[float] = NOW - 5, accounting_off: bool = False, **more) -> SlurmView:
    return SlurmView(cached={"500": rec} if rec is not None else {}, now=now, last_squeue=last_squeue,
                     last_sacct=last_sacct, accounting_off=accounting_off, **more)


def decide(r: TrackedRun, v: SlurmView, fresh: Optional[TrackedRun] = None) -> list[RunChange]:
    """plan, then settle on the run as re-read after ingest (`fresh`, or the same run)."""
    plan = reconcile.plan([r], v, GRACE_S)
    return plan.follow + reconcile.settle(plan.settle, {r.id: fresh or r}, v)


# -- a run's own end and Slurm's final word ------------------------------------------------------------------

def test_a_run_that_recorded_completed_keeps_it_whatever_slurm_says() -> None:
    """The work was done: the run's own COMPLETED is never overridden, not even by CANCELLED or TIMEOUT."""
    for word in ("CANCELLED", "TIMEOUT", "FAILED", "NODE_FAIL"):
        assert decide(run("COMPLETED"), view(sacct(word))) == []


def test_killed_from_outside_beats_the_runs_own_failed() -> None:
    """A run that recorded FAILED (its traceback at the kill) gets Slurm's TIMEOUT, and both reasons."""
    r = run("FAILED", error="Traceback...\nKeyboardInterrupt\n")
    [change] = decide(r, view(sacct("TIMEOUT", elapsed_s=63, timelimit_s=60)))
    assert change.state == "TIMEOUT" and change.only_from == ("FAILED",)
    assert change.error == ("Slurm job 500: TIMEOUT after 63 s (limit 60 s)\n"
                            "(the run itself recorded FAILED: KeyboardInterrupt)")


def test_the_runs_own_failed_agrees_with_slurms_failed() -> None:
    """FAILED with an exit code (no signal) is what the run said already: nothing to change."""
    assert decide(run("FAILED", error="boom"), view(sacct("FAILED", exit_code=1))) == []


def test_any_final_word_from_slurm_beats_lost() -> None:
    """LOST was a guess made while Slurm said nothing: sacct's record replaces it, without the result grace."""
    [change] = decide(run("LOST", error="left the queue"), view(sacct("COMPLETED", end=NOW - 1)))
    assert change.state == "COMPLETED" and change.error.startswith("Slurm job 500: COMPLETED; the run recorded no end")


def test_completed_from_slurm_waits_the_result_grace() -> None:
    """Slurm says COMPLETED but the run recorded no end: its end record may still be on its way (NFS), so the
    run is settled only RESULT_GRACE_S after the job's end."""
    r = run("RUNNING")
    assert decide(r, view(sacct("COMPLETED", end=NOW - reconcile.RESULT_GRACE_S + 1))) == []
    rec = sacct("COMPLETED", end=NOW - reconcile.RESULT_GRACE_S)
    [change] = decide(r, view(rec))
    assert change.state == "COMPLETED" and "the run recorded no end" in change.error and change.ended == rec.end


def test_the_runs_own_end_ingested_meanwhile_wins() -> None:
    """settle decides on the run re-read after ingest: an end record that arrived meanwhile is kept."""
    r = run("RUNNING")
    v = view(sacct("CANCELLED", reason="by 1000"))
    assert reconcile.plan([r], v, GRACE_S).settle == [(r, v.cached["500"])]
    assert decide(r, v, fresh=replace(r, state="COMPLETED")) == []
    [change] = decide(r, v)
    assert change.state == "CANCELLED" and change.error == "Slurm job 500: CANCELLED by uid 1000"


def test_a_memory_kill_needs_the_line_the_loop_read_from_the_jobs_stderr() -> None:
    """FAILED 0:9 is a memory kill when slurmstepd said so in the job's stderr; the loop reads that log only
    for a run this can change, and passes the line in."""
    r = run("FAILED")
    rec = sacct("FAILED", exit_code=0, signal=9)
    assert reconcile.needs_memory_check(r, rec) and reconcile.needs_memory_check(run("RUNNING"), rec)
    assert not reconcile.needs_memory_check(run("OUT_OF_MEMORY"), rec)
    assert not reconcile.needs_memory_check(r, sacct("FAILED", exit_code=1))
    assert decide(r, view(rec)) == []  # no such line: the run's FAILED (signal 9) stands
    line = "slurmstepd: error: Step 500.batch exceeded memory limit (538034176 > 104857600), being killed"
    [change] = decide(r, view(rec, memory_kills={"s1-0": line}))
    assert change.state == "OUT_OF_MEMORY" and change.error.endswith(f"after going over its memory: {line}")


def test_who_cancelled_comes_from_the_names_the_loop_looked_up() -> None:
    """`by 1000` names the user when the loop found the uid in the user database, the bare uid otherwise."""
    rec = sacct("CANCELLED", reason="by 1000")
    assert reconcile.canceller_uid(rec.reason) == "1000" and reconcile.canceller_uid("Resources") is None
    named = reconcile.slurm_outcome(rec, user_names={"1000": "alice"})
    assert named == ("CANCELLED", "Slurm job 500: CANCELLED by alice (uid 1000)")


# -- LOST ------------------------------------------------------------------------------------------------------

def test_lost_only_after_the_grace_period_and_a_later_sacct() -> None:
    """A job gone from squeue without a final record makes its run LOST only `lost_grace_s` after squeue last
    listed it, and only once a sacct answered at least SACCT_LAG_S after that (slurmdbd lags)."""
    seen = NOW - GRACE_S
    r, rec = run("RUNNING"), squeue("RUNNING", updated=seen)
    assert decide(r, view(rec, now=NOW - 1, last_sacct=NOW - 5)) == []  # within the grace period
    assert decide(r, view(rec, last_sacct=seen + reconcile.SACCT_LAG_S - 1)) == []  # no sacct since it left
    assert decide(r, view(rec, last_sacct=None)) == []
    [change] = decide(r, view(rec, last_sacct=seen + reconcile.SACCT_LAG_S))
    assert change.state == "LOST" and change.only_from == ("RUNNING",)
    assert change.error == (f"Slurm job 500 left the queue {GRACE_S:.0f} s ago; sacct has no record of it and "
                            "the run recorded no end")


def test_lost_without_accounting_needs_no_sacct_and_never_before_squeue_stopped_listing_it() -> None:
    """Without accounting the grace period alone decides; a job the last squeue listed is never LOST."""
    r = run("RUNNING")
    [change] = decide(r, view(squeue("RUNNING", updated=NOW - GRACE_S), last_sacct=None, accounting_off=True))
    assert change.state == "LOST" and "keeps no accounting" in change.error
    assert decide(r, view(squeue("RUNNING", updated=NOW - 10), last_squeue=NOW - 10, accounting_off=True)) == []


# -- following the queue ------------------------------------------------------------------------------------

def test_squeue_moves_runs_and_a_requeue_reopens_an_ended_one() -> None:
    """PENDING makes a SUBMITTING run QUEUED, RUNNING a queued run RUNNING; a higher RestartCnt sends a running
    run back to QUEUED and reopens one that had ended. Only a record from the last squeue counts."""
    last = NOW - 10
    assert decide(run("SUBMITTING"), view(squeue("PENDING", last), last_squeue=last)) == [
        RunChange("s1-0", "QUEUED", ("SUBMITTING",))]
    assert decide(run("QUEUED"), view(squeue("RUNNING", last), last_squeue=last)) == [
        RunChange("s1-0", "RUNNING", ("QUEUED",))]
    assert decide(run("RUNNING"), view(squeue("PENDING", last, restarts=1), last_squeue=last)) == [
        RunChange("s1-0", "QUEUED", ("RUNNING",))]
    assert decide(run("FAILED"), view(squeue("PENDING", last, restarts=1), last_squeue=last)) == [
        RunChange("s1-0", "QUEUED", ("FAILED",), reopen=True)]
    assert decide(run("QUEUED"), view(squeue("RUNNING", last - 10), last_squeue=last)) == []  # an older squeue's


# -- merging squeue's and sacct's answers into the cache ---------------------------------------------------------

def test_sacct_of_the_execution_a_requeue_ended_is_ignored() -> None:
    """After a requeue squeue shows a later Submit; sacct's lagging record of the killed execution (the earlier
    Submit) is not stored, so it never settles the run."""
    queued_again = squeue("PENDING", updated=NOW - 10, restarts=1, submit=2000.0)
    assert reconcile.earlier_execution(sacct("FAILED", submit=1000.0), queued_again)
    assert reconcile.merge_sacct(queued_again, sacct("FAILED", submit=1000.0), active=True, listed_since=None) is None


def test_a_final_record_about_a_job_the_last_squeue_listed_is_held() -> None:
    """The queue is newer than the accounting database: while the last (recent) squeue listed the job and its
    run recorded no end, sacct's final word waits for a squeue that no longer lists it."""
    listed = squeue("COMPLETING", updated=NOW - 10, restarts=1, submit=900.0)
    final = sacct("FAILED", signal=9, submit=900.0)
    assert reconcile.merge_sacct(listed, final, active=True, listed_since=NOW - 10) is None
    assert reconcile.merge_sacct(listed, final, active=True, listed_since=None) is not None  # no recent squeue
    assert reconcile.merge_sacct(listed, final, active=False, listed_since=NOW - 10) is not None  # the run ended
    stored = reconcile.merge_sacct(listed, final, active=True, listed_since=NOW)  # a later squeue did not list it
    assert stored.state == "FAILED" and stored.source == "sacct" and stored.restarts == 1


def test_a_lagging_live_sacct_record_keeps_squeues_word_and_fills_the_rest() -> None:
    """sacct saying RUNNING about a job squeue saw last does not replace squeue's state or time; it adds what
    squeue does not print (limits, resources)."""
    listed = squeue("PENDING", updated=NOW - 10, restarts=1)
    stored = reconcile.merge_sacct(listed, sacct("RUNNING", timelimit_s=60, alloc_cpus=2), active=True,
                                   listed_since=None)
    assert (stored.state, stored.source, stored.updated) == ("PENDING", "squeue", NOW - 10)
    assert (stored.timelimit_s, stored.alloc_cpus, stored.restarts) == (60, 2, 1)


def test_squeue_keeps_sacct_figures_of_the_same_execution_only() -> None:
    """squeue's new word keeps what sacct knew of the same execution; after a requeue (a later Submit) the
    cached figures were another execution's and go, but the restart count never goes down."""
    known = sacct("RUNNING", submit=900.0, timelimit_s=60, restarts=2)
    same = reconcile.merge_squeue(known, squeue("RUNNING", updated=NOW, submit=900.0))
    assert (same.state, same.source, same.updated, same.timelimit_s, same.restarts) == ("RUNNING", "squeue", NOW, 60, 2)
    later = reconcile.merge_squeue(known, squeue("PENDING", updated=NOW, submit=950.0))
    assert (later.state, later.timelimit_s, later.restarts) == ("PENDING", None, 2)


# -- what sacct is asked about --------------------------------------------------------------------------------------

def test_sacct_targets_are_runs_gone_from_squeue_and_ended_runs_without_sacct_final_record() -> None:
    """A job the last squeue listed, or queued after it started, is not asked for; an ended run is (after the
    active ones), until sacct's final record is cached; a job sacct knows nothing of is said so once well
    after its end."""
    last = NOW - 10
    listed, gone, late, ended = (replace(run("RUNNING"), id=f"r{i}", job_id=str(i)) for i in range(4))
    late = replace(late, queued_at=last + 1)
    ended = replace(ended, state="COMPLETED", queued_at=10.0, ended=NOW - reconcile.SACCT_LAG_S)
    cached = {"0": replace(squeue("RUNNING", last), job_id="0"), "1": replace(squeue("RUNNING", last - 10), job_id="1")}
    assert reconcile.sacct_targets([ended, listed, gone, late], cached, last) == [gone, ended]
    assert reconcile.sacct_targets([ended], {"3": replace(sacct("COMPLETED"), job_id="3")}, last) == []
    assert reconcile.unknown_to_sacct([gone, ended], answered=set(), now=NOW) == ["3"]
    assert reconcile.unknown_to_sacct([replace(ended, ended=NOW - 1)], answered=set(), now=NOW) == []
