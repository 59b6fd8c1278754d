"""The shared poller on a fake clock, with squeue/sacct answers built from recorded output (tests/data/poller).

Bigger cases put other job ids into the recorded lines; the times in them stay as recorded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

from slurmml.cli.watch import print_summary
from slurmml.core.reconcile import RunChange, slurm_outcome
from slurmml.poller.loop import Poller
from slurmml.registry import jobs
from slurmml.registry.registry import Registry
from slurmml.report.progress import follow, snapshot
from slurmml.slurm.accounting import SACCT_REPORT_FIELDS, parse_sacct_report
from slurmml.slurm.commands import CommandResult
from slurmml.slurm.parse import SQUEUE_ARGV, parse_squeue
from slurmml.core.states import state_path

DATA = Path(__file__).resolve().parents[1] / "data" / "poller"
FIELDS_22_05 = [f for f in SACCT_REPORT_FIELDS if f != "Restarts"]  # what 22.05 accepts


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def lines_of(name: str, job_id: str) -> list[str]:
    """The recorded lines of one job: its job line and its step lines."""
    return [line for line in recorded(name).splitlines() if line.split("|")[0].split(".")[0] == job_id]


def with_id(line: str, job_id: str, raw_id: Optional[str] = None) -> str:
    """A recorded squeue or sacct line about another job: JobID (and JobIDRaw) replaced, steps kept."""
    fields = line.split("|")
    fields[0] = job_id + fields[0][len(fields[0].split(".")[0]):]
    if raw_id is not None:
        fields[1] = raw_id + fields[1][len(fields[1].split(".")[0]):]
    return "|".join(fields)


def parse_time(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def submit_of(outcome: str) -> str:
    """The Submit time in the recorded sacct job line of an outcome (the job's last execution)."""
    return SACCT_ENDED[outcome][0].split("|")[FIELDS_22_05.index("Submit")]


def with_submit(squeue_line: str, submit: str) -> str:
    fields = squeue_line.split("|")
    fields[4] = submit
    return "|".join(fields)


SQUEUE_PENDING = lines_of("squeue_me.txt", "4704_8")[0]
SQUEUE_RUNNING = lines_of("squeue_me.txt", "4704_0")[0]
SQUEUE_REQUEUED = lines_of("squeue_me.txt", "4705")[0]  # PENDING, BeginTime, RestartCnt 1
SACCT_RUNNING = lines_of("sacct_report_partial.txt", "4705")
SACCT_ENDED = {
    "COMPLETED": lines_of("sacct_report_ends.txt", "4745_0"),
    "FAILED": lines_of("sacct_report_ends.txt", "4745_1"),
    "TIMEOUT": lines_of("sacct_report_ends.txt", "4745_2"),
    "CANCELLED": lines_of("sacct_report_ends.txt", "4745_3"),
    "OVER_MEMORY": lines_of("sacct_report_over_memory.txt", "4702"),
    # the same job as if it had been killed (signal 9) before the first memory sample
    "KILLED": [line.replace("|525424K|", "||") for line in lines_of("sacct_report_over_memory.txt", "4702")],
}


@dataclass
class FakeJob:
    job_id: str
    start: float  # RUNNING from here
    end: float  # gone from squeue from here
    outcome: str = "COMPLETED"  # a key of SACCT_ENDED
    requeued_at: Optional[float] = None  # PENDING again (RestartCnt 1) from here until `start_again`
    start_again: Optional[float] = None


class FakeSlurm:
    """A fake clock and a `run` answering squeue and sacct about FakeJobs, from recorded lines."""

    def __init__(self, now: float, jobs_: list[FakeJob], sacct_lag_s: float = 3.0) -> None:
        self.now = now
        self.jobs = {j.job_id: j for j in jobs_}
        self.sacct_lag_s = sacct_lag_s
        self.calls: list[tuple[str, float, list[str]]] = []
        self.squeue_answer: Optional[Callable[[float], Optional[CommandResult]]] = None  # None: the normal answer
        self.sacct_answer: Optional[Callable[[float], Optional[CommandResult]]] = None

    def clock(self) -> float:
        return self.now

    def run(self, argv, **_):
        self.calls.append((argv[0], self.now, list(argv)))
        special = {"squeue": self.squeue_answer, "sacct": self.sacct_answer}[argv[0]]
        answer = special(self.now) if special else None
        if answer is not None:
            return answer
        return self._squeue(argv) if argv[0] == "squeue" else self._sacct(argv)

    def count(self, program: str, until: Optional[float] = None) -> int:
        return sum(1 for name, at, _ in self.calls if name == program and (until is None or at <= until))

    def times(self, program: str) -> list[float]:
        return [at for name, at, _ in self.calls if name == program]

    def _squeue(self, argv) -> CommandResult:
        assert argv == list(SQUEUE_ARGV)
        rows = []
        for job in self.jobs.values():
            if self.now >= job.end:
                continue
            # squeue's SubmitTime agrees with sacct's Submit of the same execution; a requeue gives a new one
            submit = submit_of(job.outcome)
            requeued = job.requeued_at is not None and self.now >= job.requeued_at
            if job.requeued_at is not None and not requeued:
                submit = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(parse_time(submit) - 60))
            if requeued and self.now < (job.start_again or job.end):
                rows.append(with_submit(with_id(SQUEUE_REQUEUED, job.job_id), submit))
            elif self.now >= job.start:
                rows.append(with_submit(with_id(SQUEUE_RUNNING, job.job_id), submit))
            else:
                rows.append(with_submit(with_id(SQUEUE_PENDING, job.job_id), submit))
        return CommandResult(tuple(argv), 0, "".join(row + "\n" for row in rows), "")

    def _sacct(self, argv) -> CommandResult:
        options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
        if "Restarts" in options["format"].split(","):
            return CommandResult(tuple(argv), 1, "", recorded("sacct_err_restarts.txt"))
        assert options["format"].split(",") == FIELDS_22_05
        assert "starttime" in options  # always time-bounded
        lines = []
        for wanted in options["jobs"].split(","):
            for job in self.jobs.values():
                if job.job_id != wanted and not job.job_id.startswith(wanted + "_"):
                    continue
                raw = job.job_id.replace("_", "")
                if self.now >= job.end + self.sacct_lag_s:
                    lines.extend(with_id(line, job.job_id, raw) for line in SACCT_ENDED[job.outcome])
                elif self.now >= job.start:
                    lines.extend(with_id(line, job.job_id, raw) for line in SACCT_RUNNING)
        return CommandResult(tuple(argv), 0, "".join(line + "\n" for line in lines), "")


def spool(path: Path, *records: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def make_registry(path: Path, job_ids: list[str], spools: Optional[dict[str, str]] = None,
                  logs: Optional[dict[str, str]] = None, sweep: str = "s1") -> Registry:
    """A registry holding one sweep, run s1-i with Slurm job job_ids[i], queued now (real time)."""
    registry = Registry(path)
    registry.add_sweep({"id": sweep, "created": time.time(), "argv": [], "sweep_dir": str(path.parent / sweep),
                        "cwd": str(path.parent), "launcher": {}},
                       [{"id": f"{sweep}-{i}", "job_num": i, "spool_path": (spools or {}).get(job_id)}
                        for i, job_id in enumerate(job_ids)])
    registry.mark_queued({f"{sweep}-{i}": (job_id, (logs or {}).get(job_id, f"/nonexistent/{job_id}.err"))
                          for i, job_id in enumerate(job_ids)})
    return registry


def state(registry: Registry, run_id: str) -> str:
    return registry.run(run_id)["state"]


def drive(fake: FakeSlurm, pollers: list[Poller], until: float, step_s: float = 0.5) -> None:
    """The pollers take turns, one poll every step_s of fake time."""
    turn = 0
    while fake.now < until:
        pollers[turn % len(pollers)].poll()
        turn += 1
        fake.now += step_s


T0_OFFSET = 5.0  # the fake clock starts a little after the runs were queued (real time)


# -- the load budget -----------------------------------------------------------------------------------------

def test_two_pollers_on_one_registry_stay_within_the_load_budget(tmp_path: Path) -> None:
    """2,000 jobs (a 1,000-task array and 1,000 single jobs) ending over 5 minutes, two pollers alternating."""
    array = [f"7000_{i}" for i in range(1000)]
    single = [str(8000 + i) for i in range(1000)]
    job_ids = array + single
    path = tmp_path / "registry.db"
    first = make_registry(path, job_ids)
    second = Registry(path)
    t0 = time.time() + T0_OFFSET
    fake_jobs = []
    for k, job_id in enumerate(job_ids):
        end = t0 + 20 + k * 280 / len(job_ids)  # the last one leaves squeue just before 300 s
        outcome = "FAILED" if k >= 1000 and k % 10 == 0 else "COMPLETED"
        fake_jobs.append(FakeJob(job_id, start=max(t0, end - 30), end=end, outcome=outcome))
    fake = FakeSlurm(t0, fake_jobs)
    warnings: list[str] = []
    pollers = [Poller(registry, run=fake.run, clock=fake.clock, warn=warnings.append) for registry in (first, second)]

    drive(fake, pollers, until=t0 + 300)
    squeue_calls, sacct_calls = fake.count("squeue"), fake.count("sacct")
    assert squeue_calls <= 31 and sacct_calls <= 6, (squeue_calls, sacct_calls)
    squeue_times = fake.times("squeue")
    assert all(b - a >= 10 for a, b in zip(squeue_times, squeue_times[1:]))
    sacct_slots = sorted(set(fake.times("sacct")))  # a retry without the refused Restarts field shares its slot
    assert all(b - a >= 60 for a, b in zip(sacct_slots, sacct_slots[1:]))
    for _, _, argv in fake.calls:
        if argv[0] == "sacct":
            ids = next(a for a in argv if a.startswith("--jobs=")).split("=")[1].split(",")
            assert len(ids) <= 500 and "7000_1" not in ids  # array tasks are asked for by the array's id
    print(f"load budget, 300 s: squeue {squeue_calls}, sacct {sacct_calls}")

    drive(fake, pollers, until=t0 + 600)  # every run settles, still within the budget
    states = {run["id"]: run["state"] for run in first.runs(sweep="s1")}
    failed = {f"s1-{k}" for k in range(1000, 2000, 10)}
    assert {s for run_id, s in states.items() if run_id not in failed} == {"COMPLETED"}
    assert {states[run_id] for run_id in failed} == {"FAILED"}
    assert first.run("s1-1000")["exit_code"] == 1
    assert fake.count("squeue") <= 61 and fake.count("sacct") <= 11
    assert warnings == []


def test_a_field_this_sacct_refuses_is_dropped_once_for_every_poller(tmp_path: Path, monkeypatch) -> None:
    """Later Slurm releases have a Restarts field; 22.05's sacct refuses the whole call (recorded)."""
    monkeypatch.setattr("slurmml.poller.loop.SACCT_REPORT_FIELDS", [*FIELDS_22_05, "Restarts"])
    path = tmp_path / "registry.db"
    first = make_registry(path, ["4745_0", "4745_1"])
    t0 = time.time() + T0_OFFSET
    fake = FakeSlurm(t0, [FakeJob("4745_0", t0, t0 + 5), FakeJob("4745_1", t0, t0 + 100, outcome="FAILED")])
    pollers = [Poller(r, run=fake.run, clock=fake.clock) for r in (first, Registry(path))]
    drive(fake, pollers, until=t0 + 200)
    formats = [argv[3] for name, _, argv in fake.calls if name == "sacct"]
    assert sum("Restarts" in f for f in formats) == 1  # refused once, then never asked for again by either
    assert len(formats) >= 3 and len(set(fake.times("sacct"))) == len(formats) - 1  # the retry shares its slot
    assert [state(first, "s1-0"), state(first, "s1-1")] == ["COMPLETED", "FAILED"]


def test_a_call_is_claimed_by_one_process_only(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    first, second = make_registry(path, ["1"]), Registry(path)
    assert jobs.claim_call(first, "squeue", 100.0, 40) is True
    assert jobs.claim_call(second, "squeue", 100.0, 40) is False
    assert jobs.claim_call(second, "squeue", 139.0, 40) is False  # the claimer may still be waiting for squeue
    jobs.record_call(first, "squeue", 100.0, 101.0, True, 10, 300)
    assert jobs.claim_call(second, "squeue", 109.0, 40) is False
    assert jobs.claim_call(second, "squeue", 110.0, 40) is True


def test_squeue_interval_is_never_below_five_seconds(tmp_path: Path) -> None:
    poller = Poller(make_registry(tmp_path / "registry.db", ["1"]), squeue_interval_s=1)
    assert poller.squeue_interval_s == 5


# -- backoff -----------------------------------------------------------------------------------------------------

def test_squeue_backs_off_doubling_up_to_five_minutes_and_resets_on_success(tmp_path: Path) -> None:
    registry = make_registry(tmp_path / "registry.db", ["4745_2"])
    t0 = time.time() + T0_OFFSET
    fake = FakeSlurm(t0, [FakeJob("4745_2", start=t0, end=t0 + 10_000)])
    timeout = CommandResult(tuple(SQUEUE_ARGV), 124, "", "squeue: no answer within 30 s")
    fake.squeue_answer = lambda now: timeout if now < t0 + 500 else None
    poller = Poller(registry, run=fake.run, clock=fake.clock)
    reports = []
    while fake.now < t0 + 650:
        reports.append(poller.poll())
        fake.now += 1
    gaps = [round(b - a) for a, b in zip(fake.times("squeue"), fake.times("squeue")[1:])]
    assert gaps[:6] == [20, 40, 80, 160, 300, 10]  # the sixth call (at 600 s) answered: back to 10 s
    assert set(gaps[6:]) == {10}
    assert any("no answer within 30 s" in failure for r in reports for failure in r.failed_calls)
    assert state(registry, "s1-0") == "RUNNING"


def test_sacct_failure_backs_off_without_losing_runs(tmp_path: Path) -> None:
    registry = make_registry(tmp_path / "registry.db", ["4745_3"])
    t0 = time.time() + T0_OFFSET
    fake = FakeSlurm(t0, [FakeJob("4745_3", start=t0, end=t0 + 5, outcome="CANCELLED")])
    refused = CommandResult(("sacct",), 1, "", "sacct: error: slurmdbd: Sending message type 1472: 11: "
                                               "Resource temporarily unavailable\n")
    fake.sacct_answer = lambda now: refused if now < t0 + 400 else None
    poller = Poller(registry, run=fake.run, clock=fake.clock, lost_grace_s=120)
    drive(fake, [poller], until=t0 + 700, step_s=1)
    sacct_times = sorted(set(fake.times("sacct")))
    gaps = [round(b - a) for a, b in zip(sacct_times, sacct_times[1:])]
    assert gaps[:3] == [120, 240, 300]  # 60 s doubled, then capped
    run = registry.run("s1-0")
    assert run["state"] == "CANCELLED"  # never LOST while sacct could not be asked
    assert "LOST" not in {s["state"] for s in run["states"]}


# -- without accounting --------------------------------------------------------------------------------------------

def test_without_accounting_warns_once_and_falls_back_to_squeue_and_end_records(tmp_path: Path) -> None:
    t0 = time.time() + T0_OFFSET
    spools = {"101": spool(tmp_path / "spool" / "101.jsonl", {"k": "start", "t": t0}, {"k": "end", "t": t0 + 9,
                                                                                         "state": "COMPLETED", "exit_code": 0})}
    path = tmp_path / "registry.db"
    registry = make_registry(path, ["101", "102", "103"], spools=spools)
    other = Registry(path)
    fake = FakeSlurm(t0, [FakeJob("101", t0, t0 + 10), FakeJob("102", t0, t0 + 20), FakeJob("103", t0, t0 + 10_000)])
    disabled = CommandResult(("sacct",), 1, "", recorded("sacct_err_accounting_disabled.txt"))
    fake.sacct_answer = lambda now: disabled
    warnings: list[str] = []
    pollers = [Poller(r, run=fake.run, clock=fake.clock, lost_grace_s=120, warn=warnings.append)
               for r in (registry, other)]
    drive(fake, pollers, until=t0 + 30)
    drive(fake, pollers[:1], until=t0 + 400, step_s=1)

    assert len([w for w in warnings if "no accounting" in w]) <= 2 and len(warnings) >= 1  # at most once per poller
    assert len(set(warnings)) == 1
    assert fake.count("sacct") == 1  # not asked again for an hour
    assert state(registry, "s1-0") == "COMPLETED"  # the run's own end record
    lost = registry.run("s1-1")
    assert lost["state"] == "LOST" and "no accounting" in lost["error"]
    assert state(registry, "s1-2") == "RUNNING"  # still in squeue
    assert fake.count("squeue") >= 35


def test_one_poller_warns_once(tmp_path: Path) -> None:
    t0 = time.time() + T0_OFFSET
    registry = make_registry(tmp_path / "registry.db", ["102", "103"])
    fake = FakeSlurm(t0, [FakeJob("102", t0, t0 + 20), FakeJob("103", t0, t0 + 3700)])
    fake.sacct_answer = lambda now: CommandResult(("sacct",), 1, "", recorded("sacct_err_accounting_disabled.txt"))
    warnings: list[str] = []
    drive(fake, [Poller(registry, run=fake.run, clock=fake.clock, lost_grace_s=60, warn=warnings.append)],
          until=t0 + 4000, step_s=5)
    assert len(warnings) == 1
    assert fake.count("sacct") == 2  # asked again after an hour


# -- LOST ---------------------------------------------------------------------------------------------------------

def test_job_gone_from_squeue_and_sacct_is_lost_after_the_grace_period(tmp_path: Path) -> None:
    registry = make_registry(tmp_path / "registry.db", ["4745_1"])
    t0 = time.time() + T0_OFFSET
    fake = FakeSlurm(t0, [FakeJob("4745_1", start=t0, end=t0 + 15)])
    fake.sacct_answer = lambda now: CommandResult(("sacct",), 0, "", "")  # sacct never heard of it
    poller = Poller(registry, run=fake.run, clock=fake.clock, lost_grace_s=120)
    drive(fake, [poller], until=t0 + 125, step_s=1)
    assert state(registry, "s1-0") == "RUNNING"  # gone since t0 + 10 (last listed), not yet 120 s
    drive(fake, [poller], until=t0 + 200, step_s=1)
    run = registry.run("s1-0")
    assert run["state"] == "LOST"
    assert "4745_1 left the queue" in run["error"] and "sacct has no record" in run["error"]
    lost_at = next(s["time"] for s in run["states"] if s["state"] == "LOST")
    assert t0 + 130 <= lost_at <= t0 + 200


def test_lost_run_takes_slurms_word_when_sacct_catches_up(tmp_path: Path) -> None:
    registry = make_registry(tmp_path / "registry.db", ["4745_2"])
    t0 = time.time() + T0_OFFSET
    fake = FakeSlurm(t0, [FakeJob("4745_2", start=t0, end=t0 + 15, outcome="TIMEOUT")], sacct_lag_s=250)
    poller = Poller(registry, run=fake.run, clock=fake.clock, lost_grace_s=120)
    drive(fake, [poller], until=t0 + 200, step_s=1)
    assert state(registry, "s1-0") == "LOST"
    drive(fake, [poller], until=t0 + 400, step_s=1)
    run = registry.run("s1-0")
    assert run["state"] == "TIMEOUT" and "after 76 s (limit 60 s)" in run["error"]


# -- final states ---------------------------------------------------------------------------------------------------

FAILED_TRACEBACK = "Traceback (most recent call last):\n  File \"app.py\", line 1\nRuntimeError: boom\n"


@pytest.mark.parametrize("outcome, own_end, expected, words", [
    ("COMPLETED", None, "COMPLETED", "the run recorded no end"),
    ("FAILED", None, "FAILED", "exit code 1"),
    ("TIMEOUT", None, "TIMEOUT", "TIMEOUT after 76 s (limit 60 s)"),
    ("CANCELLED", None, "CANCELLED", "CANCELLED by root (uid 0)"),
    ("OVER_MEMORY", None, "OUT_OF_MEMORY", "MaxRSS 513 MB, requested 100 MB"),  # no log to read: sacct's figures
    ("KILLED", None, "FAILED", "killed by signal 9"),
    ("FAILED", "FAILED", "FAILED", "RuntimeError: boom"),  # the run's own FAILED agrees with Slurm's
    ("CANCELLED", "FAILED", "CANCELLED", "(the run itself recorded FAILED: RuntimeError: boom)"),
    ("TIMEOUT", "FAILED", "TIMEOUT", "TIMEOUT after 76 s"),
    ("CANCELLED", "COMPLETED", "COMPLETED", None),  # the work was done: the run's own COMPLETED stays
])
def test_final_state_from_slurm_and_the_runs_own_end(tmp_path: Path, outcome, own_end, expected, words) -> None:
    t0 = time.time() + T0_OFFSET
    spools = {}
    if own_end:
        end = {"k": "end", "t": t0 + 4, "state": own_end, "exit_code": 0 if own_end == "COMPLETED" else 1,
               "error": FAILED_TRACEBACK if own_end == "FAILED" else None}
        spools["500"] = spool(tmp_path / "spool.jsonl", {"k": "start", "t": t0 + 1}, end)
    registry = make_registry(tmp_path / "registry.db", ["500"], spools=spools)
    fake = FakeSlurm(t0, [FakeJob("500", start=t0, end=t0 + 5, outcome=outcome)])
    drive(fake, [Poller(registry, run=fake.run, clock=fake.clock)], until=t0 + 100, step_s=1)
    run = registry.run("s1-0")
    assert run["state"] == expected
    if words:
        assert words in run["error"]
    if expected == "FAILED":
        assert run["exit_code"] == 1 or "signal 9" in run["error"]


def test_over_memory_kill_is_out_of_memory(tmp_path: Path) -> None:
    log = tmp_path / "sweep" / "4702_0_log.err"
    log.parent.mkdir()
    log.write_text(recorded("over_memory_job_output.txt"))
    # relative, as the launcher records it for a relative hydra.sweep.dir: relative to the sweep's cwd
    registry = make_registry(tmp_path / "registry.db", ["4702"], logs={"4702": "sweep/4702_0_log.err"})
    t0 = time.time() + T0_OFFSET
    fake = FakeSlurm(t0, [FakeJob("4702", start=t0, end=t0 + 10, outcome="OVER_MEMORY")])
    drive(fake, [Poller(registry, run=fake.run, clock=fake.clock)], until=t0 + 80, step_s=1)
    run = registry.run("s1-0")
    assert run["state"] == "OUT_OF_MEMORY"
    assert "exceeded memory limit (538034176 > 104857600)" in run["error"]


def test_slurm_outcome_words_on_recorded_lines() -> None:
    records = {r.job_id: r for r in parse_sacct_report(recorded("sacct_report_ends.txt"), FIELDS_22_05)}
    assert slurm_outcome(records["4745_1"]) == ("FAILED", "Slurm job 4745_1: FAILED, exit code 1")
    assert slurm_outcome(records["4745_2"])[0] == "TIMEOUT"
    assert slurm_outcome(records["4745_3"], user_names={"0": "root"}) == (
        "CANCELLED", "Slurm job 4745_3: CANCELLED by root (uid 0)")
    assert slurm_outcome(records["4745_3"])[1] == "Slurm job 4745_3: CANCELLED by uid 0"  # not in the user database


# -- following the queue, requeues ---------------------------------------------------------------------------------

def test_requeue_sends_the_run_back_to_queued_and_counts(tmp_path: Path) -> None:
    t0 = time.time() + T0_OFFSET
    spools_dir = tmp_path / "spool.jsonl"
    registry = make_registry(tmp_path / "registry.db", ["4705"], spools={"4705": str(spools_dir)})
    fake = FakeSlurm(t0, [FakeJob("4705", start=t0 + 12, end=t0 + 80, requeued_at=t0 + 30, start_again=t0 + 50)])
    poller = Poller(registry, run=fake.run, clock=fake.clock)
    drive(fake, [poller], until=t0 + 15, step_s=1)
    assert state(registry, "s1-0") == "QUEUED"
    drive(fake, [poller], until=t0 + 25, step_s=1)
    assert state(registry, "s1-0") == "RUNNING"  # from squeue, before the run's own start record
    spool(spools_dir, {"k": "start", "t": t0 + 13})
    registry.ingest()  # what every view does between polls
    drive(fake, [poller], until=t0 + 45, step_s=1)
    assert state(registry, "s1-0") == "QUEUED"  # squeue: PENDING, RestartCnt 1
    spool(spools_dir, {"k": "start", "t": t0 + 13}, {"k": "start", "t": t0 + 51},
          {"k": "end", "t": t0 + 79, "state": "COMPLETED", "exit_code": 0})
    drive(fake, [poller], until=t0 + 150, step_s=1)
    run = registry.run("s1-0")
    assert run["state"] == "COMPLETED" and run["restarts"] == 1
    history = run["states"]
    assert [entry["time"] for entry in history] == sorted(entry["time"] for entry in history)  # in time order
    assert [(s["state"], s["source"]) for s in history] == [
        ("QUEUED", "launcher"), ("RUNNING", "run"), ("RUNNING", "squeue"), ("QUEUED", "squeue"), ("RUNNING", "squeue"),
        ("RUNNING", "run"), ("COMPLETED", "run")]
    assert state_path(history) == "QUEUED -> RUNNING -> QUEUED -> RUNNING -> COMPLETED"


def test_a_run_settled_by_slurm_comes_back_when_slurm_requeues_its_job(tmp_path: Path) -> None:
    """sacct can call an execution killed by `scontrol requeue` FAILED before squeue lists the job again."""
    t0 = time.time() + T0_OFFSET
    spools_dir = tmp_path / "spool.jsonl"
    registry = make_registry(tmp_path / "registry.db", ["4705", "4706"], spools={"4705": str(spools_dir)})
    fake = FakeSlurm(t0, [FakeJob("4705", start=t0 + 2, end=t0 + 80, requeued_at=t0 + 30, start_again=t0 + 50),
                          FakeJob("4706", start=t0 + 2, end=t0 + 200)])  # squeue runs while any job is active
    poller = Poller(registry, run=fake.run, clock=fake.clock)
    drive(fake, [poller], until=t0 + 25, step_s=1)
    jobs.apply_changes(registry, [RunChange("s1-0", "FAILED", ("RUNNING",), error="Slurm job 4705: FAILED",
                                                 exit_code=1, ended=t0 + 29)], source="sacct", now=t0 + 29)
    drive(fake, [poller], until=t0 + 45, step_s=1)
    run = registry.run("s1-0")
    assert (run["state"], run["ended"], run["error"], run["exit_code"]) == ("QUEUED", None, None, None)
    drive(fake, [poller], until=t0 + 60, step_s=1)
    assert state(registry, "s1-0") == "RUNNING"
    spool(spools_dir, {"k": "start", "t": t0 + 3}, {"k": "start", "t": t0 + 51},
          {"k": "end", "t": t0 + 79, "state": "COMPLETED", "exit_code": 0})
    drive(fake, [poller], until=t0 + 150, step_s=1)
    run = registry.run("s1-0")
    assert run["state"] == "COMPLETED" and run["restarts"] == 1


def test_parse_squeue_on_recorded_output() -> None:
    records = parse_squeue(recorded("squeue_me.txt"), updated=1.0)
    assert len(records) == 41
    by_id = {r.job_id: r for r in records}
    assert by_id["4705"].state == "PENDING" and by_id["4705"].reason == "BeginTime" and by_id["4705"].restarts == 1
    assert by_id["4704_0"].state == "RUNNING" and by_id["4704_0"].reason == ""
    assert by_id["4704_39"].reason == "JobArrayTaskLimit" and by_id["4704_39"].submit is not None
    assert {r.source for r in records} == {"squeue"}
    assert parse_squeue(recorded("squeue_me_empty.txt")) == []


def test_sacct_asks_in_chunks_bounded_by_start_time(tmp_path: Path) -> None:
    job_ids = [str(9000 + i) for i in range(1200)]
    registry = make_registry(tmp_path / "registry.db", job_ids)
    t0 = time.time() + T0_OFFSET
    fake = FakeSlurm(t0, [FakeJob(j, start=t0, end=t0 + 5) for j in job_ids])
    poller = Poller(registry, run=fake.run, clock=fake.clock, sacct_chunk=500)
    drive(fake, [poller], until=t0 + 200, step_s=1)
    asked = [next(a for a in argv if a.startswith("--jobs=")).split("=")[1].split(",")
             for name, _, argv in fake.calls if name == "sacct" and "Restarts" not in argv[3]]
    assert [len(ids) for ids in asked[:3]] == [500, 500, 200]
    assert set().union(*asked[:3]) == set(job_ids)
    since = [a for name, _, argv in fake.calls if name == "sacct" for a in argv if a.startswith("--starttime=")]
    assert since and all(time.mktime(time.strptime(s.split("=")[1], "%Y-%m-%dT%H:%M:%S")) <= t0 for s in since)
    assert {run["state"] for run in registry.runs(sweep="s1")} == {"COMPLETED"}


def test_poll_without_runs_or_before_its_time_calls_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.db")
    fake = FakeSlurm(time.time(), [])
    poller = Poller(registry, run=fake.run, clock=fake.clock)
    assert poller.poll().squeue is False and fake.calls == []


# -- slurmml watch -------------------------------------------------------------------------------------------------

def test_watch_follows_until_every_run_ended_and_shows_the_best_metric(tmp_path: Path, capsys) -> None:
    t0 = time.time() + T0_OFFSET
    spools = {}
    for job_id, score, end_state in (("600", 0.5, "COMPLETED"), ("601", 0.9, "COMPLETED"), ("602", 0.7, None)):
        records = [{"k": "start", "t": t0}, {"k": "m", "t": t0, "s": 0, "v": {"val_acc": score, "loss": 1 - score}}]
        if end_state:
            records.append({"k": "end", "t": t0 + 5, "state": end_state, "exit_code": 0})
        spools[job_id] = spool(tmp_path / "spool" / f"{job_id}.jsonl", *records)
    registry = make_registry(tmp_path / "registry.db", ["600", "601", "602"], spools=spools)
    fake = FakeSlurm(t0, [FakeJob("600", t0, t0 + 6), FakeJob("601", t0, t0 + 6),
                          FakeJob("602", t0, t0 + 20, outcome="TIMEOUT")])
    poller = Poller(registry, run=fake.run, clock=fake.clock)
    seen = []

    def tick(seconds: float) -> None:
        fake.now += seconds

    final = follow(registry, ["s1"], poller, on_update=lambda snap, report: seen.append(snap.line()), sleep=tick)
    assert final.all_final and final.done == 2 and final.failed == 1
    assert final.metric == "val_acc" and final.best["value"] == 0.9 and final.best["job_num"] == 1
    assert seen[0] == "queued 0  running 1  done 2  failed 0  best val_acc 0.9 (#1)"  # ingested before the first poll
    assert seen[-1] == "queued 0  running 0  done 2  failed 1  best val_acc 0.9 (#1)"
    assert fake.count("squeue") <= (fake.now - t0) / 10 + 1  # the UI ticks every second; Slurm is not asked so

    assert snapshot(registry, ["s1"], "loss", "min").best["value"] == pytest.approx(0.1)
    print_summary(registry, ["s1"], final)
    out = capsys.readouterr().out
    assert "COMPLETED 2  TIMEOUT 1" in out and "best val_acc 0.9: run s1-1 (#1)" in out
    assert "failures by cause" in out and "Slurm job 602: TIMEOUT after 76 s" in out  # slurmml report's tables


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SLURMML_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_watch_command_on_an_ended_sweep_prints_its_summary_at_once(home: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from slurmml.cli.watch import watch

    long_ago = time.time() - 7200
    spools = {j: spool(tmp_path / "spool" / f"{j}.jsonl", {"k": "start", "t": long_ago},
                       {"k": "m", "t": long_ago, "s": 1, "v": {"loss": loss}},
                       {"k": "end", "t": long_ago + 1, "state": "COMPLETED", "exit_code": 0})
              for j, loss in (("700", 0.3), ("701", 0.2))}
    make_registry(home / "registry.db", ["700", "701"], spools=spools).ingest()
    result = CliRunner().invoke(watch, ["s1", "--metric", "loss", "--mode", "min"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "sweep s1: 2 run(s) ended: COMPLETED 2" in result.output and "best loss 0.2: run s1-1" in result.output

    (home / "s1").mkdir()
    by_dir = CliRunner().invoke(watch, [str(home / "s1")], catch_exceptions=False)  # the sweep's directory
    assert by_dir.exit_code == 0 and "sweep s1: 2 run(s) ended" in by_dir.output


def test_watch_command_unknown_sweep_and_ctrl_c(home: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from slurmml.cli.watch import watch
    from slurmml.errors import SlurmmlError

    (home / "s1").mkdir()
    make_registry(home / "registry.db", ["800"])
    unknown = CliRunner().invoke(watch, ["nosuch"])
    assert isinstance(unknown.exception, SlurmmlError) and "no sweep 'nosuch'" in str(unknown.exception)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("slurmml.report.progress.follow", interrupted)
    stopped = CliRunner().invoke(watch, [str(home / "s1")])  # found by its directory
    assert stopped.exit_code == 130
    assert "stopped watching; the jobs keep running" in stopped.output


# -- every run gets sacct's record, however it ended ----------------------------------------------------------------

def accounted(registry: Registry, job_id: str):
    rec = jobs.cached_records(registry, [job_id]).get(job_id)
    return rec if rec is not None and rec.source == "sacct" and rec.state == "COMPLETED" else None


def lagging_sacct_of_the_killed_execution(t0: float, first_submit: str) -> Callable[[float], Optional[CommandResult]]:
    """sacct from t0+20 to t0+90: 4745_4's killed first execution (FAILED, with the Submit it had before the
    requeue gave the job a new one) and 4745_0 COMPLETED."""
    fields = with_id(SACCT_ENDED["FAILED"][0], "4745_4", "4750").split("|")
    fields[FIELDS_22_05.index("Submit")] = first_submit
    lines = ["|".join(fields)] + SACCT_ENDED["COMPLETED"]

    def answer(now: float) -> Optional[CommandResult]:
        if t0 + 20 <= now < t0 + 90:
            return CommandResult(("sacct",), 0, "".join(line + "\n" for line in lines), "")
        return None

    return answer


def test_sacct_of_the_execution_a_requeue_ended_never_settles_the_run(tmp_path: Path) -> None:
    """The race behind a requeued run ending FAILED: sacct, asked about another task of the array, still
    describes the killed first execution (FAILED, the old Submit) while squeue lists the second one."""
    t0 = time.time() + T0_OFFSET
    spool_path = tmp_path / "spool.jsonl"
    registry = make_registry(tmp_path / "registry.db", ["4745_4", "4745_0"], spools={"4745_4": str(spool_path)})
    fake = FakeSlurm(t0, [FakeJob("4745_4", start=t0 + 2, end=t0 + 90, requeued_at=t0 + 20, start_again=t0 + 25),
                          FakeJob("4745_0", start=t0 + 2, end=t0 + 40)])
    first_submit = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(parse_time(submit_of("COMPLETED")) - 60))
    fake.sacct_answer = lagging_sacct_of_the_killed_execution(t0, first_submit)
    poller = Poller(registry, run=fake.run, clock=fake.clock, sacct_interval_s=5)
    for until in range(int(t0) + 5, int(t0) + 88, 5):
        drive(fake, [poller], until=until, step_s=1)
        assert state(registry, "s1-0") in {"QUEUED", "RUNNING"}, fake.now - t0
    assert state(registry, "s1-1") == "COMPLETED"
    spool(spool_path, {"k": "start", "t": t0 + 3}, {"k": "start", "t": t0 + 26},
          {"k": "end", "t": t0 + 89, "state": "COMPLETED", "exit_code": 0})
    drive(fake, [poller], until=t0 + 200, step_s=1)
    run = registry.run("s1-0")
    assert run["state"] == "COMPLETED" and run["restarts"] == 1


def test_sacct_of_a_killed_execution_while_squeue_shows_it_completing_never_settles_the_run(tmp_path: Path) -> None:
    """The same race one step earlier (CI on a fresh clone): right after `scontrol requeue`, squeue lists the
    killed execution COMPLETING with RestartCnt 1 and the Submit it had, and sacct, asked in the same round
    about another task of the array, calls that execution FAILED with the same Submit (tests/data/poller/
    README.md). A final word from sacct about a job the last squeue listed waits for a squeue that no longer
    lists it: the queue is newer than the accounting database."""
    t0 = time.time() + T0_OFFSET
    spool_path = tmp_path / "spool.jsonl"
    registry = make_registry(tmp_path / "registry.db", ["4745_4", "4745_0"], spools={"4745_4": str(spool_path)})
    fake = FakeSlurm(t0, [FakeJob("4745_4", start=t0 + 2, end=t0 + 90, requeued_at=t0 + 25, start_again=t0 + 30),
                          FakeJob("4745_0", start=t0 + 2, end=t0 + 19)])  # sacct's target right then
    first_submit = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(parse_time(submit_of("COMPLETED")) - 60))
    completing = with_submit(with_id(SQUEUE_RUNNING, "4745_4"), first_submit).split("|")
    completing[1], completing[3] = "COMPLETING", "1"

    def requeue_under_way(now: float):
        if t0 + 20 <= now < t0 + 25:
            return CommandResult(("squeue",), 0, "|".join(completing) + "\n", "")
        return None

    fake.squeue_answer = requeue_under_way
    fake.sacct_answer = lagging_sacct_of_the_killed_execution(t0, first_submit)
    poller = Poller(registry, run=fake.run, clock=fake.clock, squeue_interval_s=5, sacct_interval_s=5)
    for until in range(int(t0) + 5, int(t0) + 88, 5):
        drive(fake, [poller], until=until, step_s=1)
        assert state(registry, "s1-0") in {"QUEUED", "RUNNING"}, fake.now - t0
    squeues = [at for at in fake.times("squeue") if t0 + 20 <= at < t0 + 25]
    assert squeues and any(at in squeues for at in fake.times("sacct")), "no sacct in a round that saw COMPLETING"
    spool(spool_path, {"k": "start", "t": t0 + 3}, {"k": "start", "t": t0 + 31},
          {"k": "end", "t": t0 + 89, "state": "COMPLETED", "exit_code": 0})
    drive(fake, [poller], until=t0 + 200, step_s=1)
    run = registry.run("s1-0")
    assert run["state"] == "COMPLETED" and run["restarts"] == 1


def test_a_run_that_ended_after_the_last_squeue_still_gets_sacct(tmp_path: Path) -> None:
    """squeue last saw the job RUNNING, then the run ended on its own and nothing was active any more."""
    t0 = time.time() + T0_OFFSET
    spool_path = tmp_path / "spool.jsonl"
    registry = make_registry(tmp_path / "registry.db", ["4745_0"], spools={"4745_0": str(spool_path)})
    fake = FakeSlurm(t0, [FakeJob("4745_0", start=t0, end=t0 + 30)])
    poller = Poller(registry, run=fake.run, clock=fake.clock)
    drive(fake, [poller], until=t0 + 8, step_s=1)
    assert jobs.cached_records(registry, ["4745_0"])["4745_0"].state == "RUNNING"
    spool(spool_path, {"k": "start", "t": t0 + 1}, {"k": "end", "t": t0 + 29, "state": "COMPLETED", "exit_code": 0})
    fake.now = t0 + 40
    registry.ingest()  # what every view does before it polls
    drive(fake, [poller], until=t0 + 130, step_s=1)
    rec = accounted(registry, "4745_0")
    assert rec is not None and rec.elapsed_s == 1 and rec.timelimit_s == 60 and rec.total_cpu_s is not None
    assert fake.count("sacct") == 1


def test_a_sweep_that_ended_before_anything_polled_gets_sacct(tmp_path: Path) -> None:
    """Fire and forget: no squeue ever saw the jobs; the runs recorded their own ends."""
    t0 = time.time() + T0_OFFSET
    spools = {job: spool(tmp_path / f"{job}.jsonl", {"k": "start", "t": t0 + 1},
                         {"k": "end", "t": t0 + 2, "state": "COMPLETED", "exit_code": 0})
              for job in ("4745_0", "4745_4")}
    registry = make_registry(tmp_path / "registry.db", list(spools), spools=spools)
    registry.ingest()
    fake = FakeSlurm(t0 + 70, [FakeJob(job, start=t0, end=t0 + 3) for job in spools])
    poller = Poller(registry, run=fake.run, clock=fake.clock)
    poller.poll()
    assert fake.count("squeue") == 0 and fake.count("sacct") == 1  # nothing is active: no squeue needed
    assert accounted(registry, "4745_0") and accounted(registry, "4745_4")


def test_runs_a_view_shows_get_sacct_at_any_age_within_the_schedule(tmp_path: Path) -> None:
    t0 = time.time() + T0_OFFSET
    spools = {"4745_0": spool(tmp_path / "spool.jsonl", {"k": "start", "t": t0 + 1},
                              {"k": "end", "t": t0 + 2, "state": "COMPLETED", "exit_code": 0})}
    registry = make_registry(tmp_path / "registry.db", list(spools), spools=spools)
    registry.ingest()
    fake = FakeSlurm(t0 + 10 * 86400, [FakeJob("4745_0", start=t0, end=t0 + 3)])
    poller = Poller(registry, run=fake.run, clock=fake.clock)
    poller.poll()
    assert fake.calls == []  # ten days old: not asked for unprompted
    assert Poller(registry, run=fake.run, clock=fake.clock).poll(wanted=["s1-0"]).sacct == 1  # a command showing it
    assert accounted(registry, "4745_0")
    fake.now += 120
    poller.poll(wanted=["s1-0"])
    assert fake.count("sacct") == 1  # accounted for: never asked again


def test_an_ended_run_sacct_knows_nothing_of_is_not_asked_for_again_unprompted(tmp_path: Path) -> None:
    t0 = time.time() + T0_OFFSET
    spools = {"4745_0": spool(tmp_path / "spool.jsonl", {"k": "start", "t": t0 + 1},
                              {"k": "end", "t": t0 + 2, "state": "COMPLETED", "exit_code": 0})}
    registry = make_registry(tmp_path / "registry.db", list(spools), spools=spools)
    registry.ingest()
    fake = FakeSlurm(t0 + 3600, [])  # purged from accounting
    poller = Poller(registry, run=fake.run, clock=fake.clock)
    drive(fake, [poller], until=t0 + 3600 + 600, step_s=5)
    assert fake.count("sacct") == 1 and state(registry, "s1-0") == "COMPLETED"
    fake.now += 60
    Poller(registry, run=fake.run, clock=fake.clock).poll(wanted=["s1-0"])  # a command showing it asks again
    assert fake.count("sacct") == 2


def test_sacct_knowing_nothing_of_a_job_squeue_saw_last_is_remembered(tmp_path: Path) -> None:
    """squeue last listed the job RUNNING; the run then ended on its own and accounting lost the job."""
    t0 = time.time() + T0_OFFSET
    spool_path = tmp_path / "spool.jsonl"
    registry = make_registry(tmp_path / "registry.db", ["4745_0"], spools={"4745_0": str(spool_path)})
    fake = FakeSlurm(t0, [FakeJob("4745_0", start=t0, end=t0 + 30)], sacct_lag_s=10 ** 9)  # sacct never has it
    poller = Poller(registry, run=fake.run, clock=fake.clock)
    drive(fake, [poller], until=t0 + 8, step_s=1)
    spool(spool_path, {"k": "start", "t": t0 + 1}, {"k": "end", "t": t0 + 29, "state": "COMPLETED", "exit_code": 0})
    fake.jobs.clear()
    fake.now = t0 + 40
    registry.ingest()
    drive(fake, [poller], until=t0 + 40 + 1200, step_s=5)
    assert fake.count("sacct") <= 2 + 600 / 60  # asked while the run is fresh (FOLLOW_UP_S), not for days
    rec = jobs.cached_records(registry, ["4745_0"])["4745_0"]
    assert (rec.source, rec.state) == ("sacct", None)
    before = fake.count("sacct")
    drive(fake, [poller], until=t0 + 40 + 3600, step_s=30)
    assert fake.count("sacct") == before


@pytest.mark.parametrize("first_start_recorded", [True, False])
def test_a_requeue_counts_once_also_when_the_first_execution_never_recorded_its_start(
        tmp_path: Path, first_start_recorded: bool) -> None:
    """`scontrol requeue` soon after the job started can kill it before the task writes its start record:
    the next execution's SLURM_RESTART_COUNT still counts the restart, and a recorded first start adds nothing."""
    t0 = time.time() + T0_OFFSET
    again = {"k": "start", "t": t0 + 20, "environment": {"slurm": {"SLURM_RESTART_COUNT": "1"}}}
    first = [{"k": "start", "t": t0 + 1, "environment": {"slurm": {}}}] if first_start_recorded else []
    path = spool(tmp_path / "spool.jsonl", *first, again, {"k": "end", "t": t0 + 21, "state": "COMPLETED", "exit_code": 0})
    registry = make_registry(tmp_path / "registry.db", ["4705"], spools={"4705": path})
    registry.ingest()
    run = registry.run("s1-0")
    assert (run["state"], run["restarts"]) == ("COMPLETED", 1)
