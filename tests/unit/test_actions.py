"""Run actions without Slurm: refusals, override merging, what scancel/scontrol said (recorded stderr in
tests/unit/data), and cancel/requeue on a real registry file with an injected `run`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmml.control.actions import (
    ActionResult, cancel_message, cancel_run, clone_command, clone_outcome, clone_run, refusal, requeue_message,
    requeue_run, scancel_problem, scontrol_problem,
)
from slurmml.errors import SlurmmlError
from slurmml.launcher.clone import one_line
from slurmml.launcher.overrides import launcher_overrides, merge_overrides, split_override
from slurmml.poller.loop import Poller
from slurmml.registry import jobs
from slurmml.registry.registry import Registry
from slurmml.slurm.accounting import JobRecord
from slurmml.slurm.commands import CommandResult

DATA = Path(__file__).resolve().parent / "data"
ME = "alice"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def result(argv: list[str], returncode: int = 0, stdout: str = "", stderr: str = "") -> CommandResult:
    return CommandResult(tuple(argv), returncode, stdout, stderr)


# -- refusal -------------------------------------------------------------------------------------------------

def row(**fields) -> dict:
    return {"id": "s1-0", "sweep_id": "s1", "state": "RUNNING", "slurm_job_id": "123_4", "spool_path": "/x/0.jsonl",
            "backend": "slurm", **fields}


@pytest.mark.parametrize("action", ["cancel", "requeue", "clone"])
def test_runs_of_another_user_are_refused(action: str) -> None:
    assert refusal(action, row(), "bob", ME) == "run s1-0 belongs to bob; slurmml acts only on your own runs"


@pytest.mark.parametrize("action, fields, words", [
    ("cancel", {}, None),
    ("cancel", {"state": "QUEUED"}, None),
    ("cancel", {"state": "COMPLETED"}, "has already ended (COMPLETED); nothing to cancel"),
    ("cancel", {"state": "LOST"}, "has already ended (LOST)"),
    ("cancel", {"slurm_job_id": None, "backend": "local"}, "launched on this machine, not on Slurm"),
    ("cancel", {"slurm_job_id": None, "state": "SUBMITTING"}, "no Slurm job id yet (sbatch has not answered)"),
    ("cancel", {"slurm_job_id": None, "sweep_id": None}, "launched on this machine"),  # a plain script's run
    ("requeue", {"state": "COMPLETED"}, None),
    ("requeue", {"state": "FAILED"}, None),
    ("requeue", {"state": "RUNNING"}, None),  # scontrol requeue restarts it
    ("requeue", {"state": "QUEUED"}, "is still queued (Slurm job 123_4); nothing to requeue"),
    ("requeue", {"state": "COMPLETED", "slurm_job_id": None, "backend": "local"}, "clone it instead"),
    ("clone", {"state": "COMPLETED"}, None),
    ("clone", {"state": "QUEUED"}, None),
    ("clone", {"slurm_job_id": None, "backend": "local"}, None),
    ("clone", {"sweep_id": None, "slurm_job_id": None}, "not launched by slurmml"),
])
def test_refusal(action: str, fields: dict, words) -> None:
    why = refusal(action, row(**fields), ME, ME)
    if words is None:
        assert why is None
    else:
        assert why is not None and words in why and "\n" not in why


def test_refusal_on_the_few_fields_a_tui_row_has() -> None:
    minimal = {"id": "s1-0", "state": "COMPLETED", "slurm_job_id": None}
    assert refusal("clone", minimal, None, ME) is None  # nothing says it cannot be cloned
    assert "has no Slurm job id; nothing to requeue" in refusal("requeue", minimal, None, ME)
    assert refusal("cancel", {"id": "s1-0", "state": "RUNNING", "slurm_job_id": "7"}, ME, ME) is None
    with pytest.raises(ValueError):
        refusal("delete", minimal, None, ME)


# -- merging overrides ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("parent, changes, merged", [
    (["lr=0.1", "model=mlp"], ["lr=0.01"], ["lr=0.01", "model=mlp"]),
    (["lr=0.1"], ["seed=3"], ["lr=0.1", "seed=3"]),
    (["+extra=1", "lr=0.1"], ["extra=2"], ["+extra=2", "lr=0.1"]),  # still not in the primary config
    (["++extra=1"], ["extra=2"], ["++extra=2"]),
    (["lr=0.1"], ["++lr=0.5"], ["++lr=0.5"]),  # the change's own prefix wins
    (["lr=0.1", "seed=1"], ["~lr"], ["seed=1", "~lr"]),  # drop the override and delete the key
    (["+extra=1", "seed=1"], ["~extra"], ["seed=1"]),  # the parent added it: dropping is enough
    (["seed=1"], ["~dropout"], ["seed=1", "~dropout"]),
    (["~dropout", "seed=1"], ["dropout=0.2"], ["dropout=0.2", "seed=1"]),
    (["db@backup=mysql"], ["db@backup=pg", "db=sqlite"], ["db@backup=pg", "db=sqlite"]),
    (["lr=0.1", "lr=0.2"], ["lr=0.3"], ["lr=0.3"]),
    (["lr=0.1"], [], ["lr=0.1"]),
    ([], ["lr=0.1", "lr=0.2"], ["lr=0.2"]),
    (["name=a=b"], ["name=c"], ["name=c"]),  # only the first = splits the key
])
def test_merge_overrides(parent: list[str], changes: list[str], merged: list[str]) -> None:
    assert merge_overrides(parent, changes) == merged
    assert parent == list(parent)  # not changed in place


def test_split_override() -> None:
    assert split_override("++db.lr=1") == ("++", "db.lr")
    assert split_override("+x=1") == ("+", "x")
    assert split_override("~seed") == ("~", "seed")
    assert split_override("~seed=3") == ("~", "seed")
    assert split_override("model=mlp") == ("", "model")
    assert split_override("hydra/launcher=slurmml") == ("", "hydra/launcher")


def test_launcher_overrides_are_found() -> None:
    assert launcher_overrides(["lr=1", "hydra.launcher.timeout_min=5", "hydra/launcher=basic", "hydra.job.chdir=true",
                               "hydra.launcherx=1"]) == ["hydra.launcher.timeout_min=5", "hydra/launcher=basic"]


def test_hydra_errors_in_one_line() -> None:
    # what Hydra 1.3's load_sweep_config raised for `nosuch=1`, `+x=3` and `hydra/launcher=nosuch`
    assert one_line("Could not override 'nosuch'.\nTo append to your config use +nosuch=1") == \
        "Could not override 'nosuch'. To append to your config use +nosuch=1"
    assert one_line("Could not append to config. An item is already at 'x'.\nEither remove + prefix: 'x=3'\n"
                    "Or add a second + to add or override 'x': '++x=3'\n") == \
        "Could not append to config. An item is already at 'x'. Either remove + prefix: 'x=3'; " \
        "Or add a second + to add or override 'x': '++x=3'"
    assert one_line("In 'hydra/config': Could not find 'hydra/launcher/nosuch'\n\nAvailable options in "
                    "'hydra/launcher':\n\tbasic\n\tslurmml\nConfig search path:\n\tprovider=hydra, path=pkg://hydra.conf") \
        == "In 'hydra/config': Could not find 'hydra/launcher/nosuch'; Available options in 'hydra/launcher': basic; slurmml"
    assert one_line("no viable alternative at input '[1'\nSee https://hydra.cc/docs/1.2/advanced/override_grammar/basic "
                    "for details") == "no viable alternative at input '[1'"


# -- what Slurm said (recorded on the dev cluster, Slurm 22.05.8) ------------------------------------------------

def test_scancel_problem_on_recorded_stderr() -> None:
    assert scancel_problem(recorded("scancel_verbose_completed.txt")) == "Job/step already completing or completed"
    assert scancel_problem(recorded("scancel_verbose_purged.txt")) == "Invalid job id specified"
    assert scancel_problem(recorded("scancel_verbose_array_task.txt")) is None  # cancelled: `Terminating job 5746_1`


def test_cancel_messages_on_recorded_stderr() -> None:
    argv = ["scancel", "--verbose", "5745"]
    done = cancel_message("s1-0", "5746_1", result(argv, stderr=recorded("scancel_verbose_array_task.txt")))
    assert done == ActionResult(True, "cancelled run s1-0 (Slurm job 5746_1)")
    ended = cancel_message("s1-0", "5745", result(argv, stderr=recorded("scancel_verbose_completed.txt")))
    assert not ended.ok and ended.message == "run s1-0: Slurm job 5745 had already ended; nothing to cancel"
    gone = cancel_message("s1-0", "5000", result(argv, stderr=recorded("scancel_verbose_purged.txt")))
    assert not gone.ok and "no longer knows job 5000" in gone.message
    refused = cancel_message("s1-0", "7", result(argv, 1, stderr="scancel: error: Kill job error on job id 7: "
                                                             "Access/permission denied\n"))
    assert not refused.ok and refused.message == "scancel refused Slurm job 7 of run s1-0: Kill job error on job id 7: " \
                                                 "Access/permission denied"


def test_scontrol_problem_on_recorded_stderr() -> None:
    assert scontrol_problem(recorded("scontrol_requeue_err_purged.txt")) == "Invalid job id specified"
    assert scontrol_problem(recorded("scontrol_requeue_err_purged_array_task.txt")) == "Invalid job id specified"
    assert scontrol_problem(recorded("scontrol_requeue_err_pending.txt")) == "Job is pending execution"
    assert scontrol_problem(recorded("scontrol_requeue_err_no_requeue.txt")) == "Requested operation is presently disabled"


@pytest.mark.parametrize("name, words", [
    ("scontrol_requeue_err_purged.txt", "Slurm no longer knows job 5000 of run s1-0"),
    ("scontrol_requeue_err_purged_array_task.txt", "clone the run instead (slurmml clone s1-0)"),
    ("scontrol_requeue_err_pending.txt", "Job is pending execution; it has not started yet"),
    ("scontrol_requeue_err_no_requeue.txt", "presently disabled; this job may not be requeued"),
])
def test_requeue_messages_on_recorded_stderr(name: str, words: str) -> None:
    answer = requeue_message("s1-0", "5000", result(["scontrol", "requeue", "5000"], 1, stderr=recorded(name)))
    assert not answer.ok and words in answer.message and "\n" not in answer.message


# -- cancel and requeue on a registry, Slurm injected ----------------------------------------------------------

class FakeRun:
    """The `run` callable: records every argv, answers from a table (default: success, nothing said)."""

    def __init__(self, answers: dict[str, CommandResult] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answers = answers or {}

    def __call__(self, argv, **_):
        self.calls.append(list(argv))
        return self.answers.get(argv[0], result(list(argv)))


def make_registry(tmp_path: Path, user: str = ME, state: str = "COMPLETED", job_id: str = "123_4") -> Registry:
    registry = Registry(tmp_path / "registry.db")
    spool = tmp_path / "spool" / "0.jsonl"
    spool.parent.mkdir()
    spool.write_text(json.dumps({"k": "start", "t": 1.0, "host": "n1"}) + "\n")
    registry.add_sweep({"id": "s1", "user": user, "created": 1.0, "argv": ["train.py", "-m"], "backend": "slurm",
                        "sweep_dir": str(tmp_path), "cwd": str(tmp_path), "launcher": {"name": "t"}},
                       [{"id": "s1-0", "job_num": 0, "overrides": ["x=1"], "spool_path": str(spool)}])
    registry.mark_queued({"s1-0": (job_id, str(tmp_path / "log.err"))})
    registry.ingest()
    if state != "RUNNING":
        registry.mark_final({"s1-0": (state, "it failed" if state == "FAILED" else None)}, source="run")
        registry.conn.execute("UPDATE runs SET exit_code = 1 WHERE id = 's1-0'")
    return registry


def test_refused_runs_never_reach_slurm(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, user="bob", state="RUNNING")
    fake = FakeRun()
    for action in (cancel_run, requeue_run):
        answer = action(registry, "s1-0", run=fake, me=ME)
        assert answer == ActionResult(False, "run s1-0 belongs to bob; slurmml acts only on your own runs")
    assert fake.calls == []
    mine = make_registry(tmp_path / "mine", state="COMPLETED")
    assert not cancel_run(mine, "s1-0", run=fake, me=ME).ok
    assert not cancel_run(mine, "no-such-run", run=fake, me=ME).ok
    assert fake.calls == []


def test_cancel_calls_scancel_with_the_array_task_id(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, state="RUNNING")
    fake = FakeRun()
    answer = cancel_run(registry, "s1-0", run=fake, me=ME)
    assert answer == ActionResult(True, "cancelled run s1-0 (Slurm job 123_4)")
    assert fake.calls == [["scancel", "--verbose", "123_4"]]
    assert registry.run("s1-0")["state"] == "RUNNING"  # the poller records CANCELLED from Slurm's word


def test_requeue_marks_the_run_queued_and_drops_the_ended_jobs_cached_record(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, state="FAILED")
    registry.store_job_records([JobRecord(job_id="123_4", state="FAILED", exit_code=1, source="sacct", updated=2.0)])
    fake = FakeRun()
    before = time.time()
    answer = requeue_run(registry, "s1-0", run=fake, me=ME)
    assert answer.ok and answer.message.startswith("requeued run s1-0 (Slurm job 123_4)")
    assert fake.calls == [["scontrol", "requeue", "123_4"]]
    run = registry.run("s1-0")
    assert (run["state"], run["ended"], run["error"], run["exit_code"]) == ("QUEUED", None, None, None)
    assert run["started"] is not None  # the rerun's start record counts as a restart
    assert (run["states"][-1]["state"], run["states"][-1]["source"]) == ("QUEUED", "user")
    assert registry.job_records(["123_4"]) == {}
    (tracked,) = jobs.tracked_runs(registry, ended_since=0)
    assert tracked.queued_at >= before  # the poller counts "gone from squeue" from the requeue, not the launch


def test_requeue_of_a_job_slurm_forgot_changes_nothing_and_suggests_a_clone(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, state="COMPLETED")
    fake = FakeRun({"scontrol": result(["scontrol"], 1, stderr=recorded("scontrol_requeue_err_purged_array_task.txt"))})
    answer = requeue_run(registry, "s1-0", run=fake, me=ME)
    assert not answer.ok and "slurmml clone s1-0" in answer.message
    assert registry.run("s1-0")["state"] == "COMPLETED"


def test_a_requeued_run_is_not_lost_before_squeue_lists_it_again(tmp_path: Path) -> None:
    """Between the requeue and the next squeue, a sacct round (another poller's schedule) must not settle the
    run: not back to its old end (the dropped cache), and not LOST (gone since the launch, long ago)."""
    registry = make_registry(tmp_path, state="COMPLETED")
    registry.add_sweep({"id": "s1"}, [{"id": "s1-1", "job_num": 1}])  # another run, whose job sacct is asked about
    registry.mark_queued({"s1-1": ("999", "")})
    now = time.time()
    registry.conn.execute("UPDATE run_states SET time = ? WHERE source = 'launcher'", (now - 3600,))
    registry.conn.execute("UPDATE runs SET created = ?", (now - 3600,))
    registry.store_job_records([JobRecord(job_id="123_4", state="COMPLETED", exit_code=0, source="sacct",
                                          end=now - 3000, updated=now - 2900)])
    assert requeue_run(registry, "s1-0", run=FakeRun(), me=ME).ok
    # squeue ran 3 s ago (not due again), sacct is due and says nothing about the job yet
    jobs.record_call(registry, "squeue", now - 3, now - 3, True, 10, 300)
    jobs.record_call(registry, "sacct", now - 100, now - 100, True, 5, 300)
    squeue_line = "123_4|PENDING|BeginTime|1|2026-11-23T10:33:35|\n"  # as tests/data/poller/squeue_me.txt's 4705
    slurm = FakeRun({"sacct": result(["sacct"]), "squeue": result(["squeue"], stdout=squeue_line)})
    clock = [now]
    poller = Poller(registry, run=slurm, clock=lambda: clock[0], squeue_interval_s=10, sacct_interval_s=5)
    for _ in range(30):
        poller.poll()
        clock[0] += 1
    assert registry.run("s1-0")["state"] == "QUEUED"
    calls = [call[0] for call in slurm.calls]
    assert calls.count("squeue") >= 2 and calls[0] == "sacct"  # sacct first: the window this test is about


# -- clone through a subprocess ----------------------------------------------------------------------------

def test_clone_command_and_outcome(tmp_path: Path) -> None:
    argv = clone_command(tmp_path / "r.db", "s1-0", ["x=2", "~y"], python="/venv/bin/python")
    assert argv == ["/venv/bin/python", "-m", "slurmml.launcher.clone", str(tmp_path / "r.db"), "s1-0", "x=2", "~y"]
    sent = ActionResult(True, "cloned s1-0 as s1-7 (job 812)", new_run_id="s1-7")
    assert clone_outcome(result(argv, 0, stdout=f"what the task's module printed\n{sent.to_json_line()}\n")) == sent
    refused = ActionResult(False, "cannot clone with x=2: Could not override 'x'.")
    assert clone_outcome(result(argv, 1, stdout=refused.to_json_line() + "\n", stderr="some warning\n")) == refused
    crashed = clone_outcome(result(argv, 1, stdout="a print\n", stderr="Traceback ...\nValueError: boom\n"))
    assert crashed == ActionResult(False, "ValueError: boom")
    assert clone_outcome(result(argv, 124, stderr="python: no answer within 300 s")).message == \
        "python: no answer within 300 s"
    assert clone_outcome(result(argv, 3)).message == "the clone exited with code 3 and said nothing"
    assert ActionResult.from_json_line('{"ok": true}') is None and ActionResult.from_json_line("[1") is None


def test_clone_run_reports_a_refusal_from_the_subprocess(tmp_path: Path) -> None:
    make_registry(tmp_path, user="bob")
    answer = clone_run(tmp_path / "registry.db", "s1-0", ["x=2"])
    assert answer == ActionResult(False, "run s1-0 belongs to bob; slurmml acts only on your own runs")


def test_actions_module_stays_light() -> None:
    code = "import slurmml.control.actions, slurmml.cli.actions, sys; print(' '.join(sys.modules))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert loaded & {"hydra", "cloudpickle", "submitit", "rich", "textual", "omegaconf"} == set()


# -- the CLI ---------------------------------------------------------------------------------------------------

def test_cli_refusals_are_one_line_each_and_exit_1(tmp_path: Path, monkeypatch) -> None:
    from slurmml.cli import main

    monkeypatch.setenv("SLURMML_HOME", str(tmp_path))
    registry = make_registry(tmp_path, user="someone-else", state="RUNNING")
    bin_dir = tmp_path / "bin"  # a scancel that would tell on being called
    bin_dir.mkdir()
    (bin_dir / "scancel").write_text(f"#!/bin/sh\necho called >> {tmp_path / 'called'}\n")
    (bin_dir / "scancel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    runner = CliRunner()
    for command in (["cancel", "s1-0", "nope"], ["requeue", "s1-0"], ["clone", "s1-0", "x=2"]):
        out = runner.invoke(main, command)
        assert out.exit_code == 1, out.output
        lines = out.output.strip().splitlines()
        assert len(lines) == (2 if command[0] == "cancel" else 1), out.output
        assert lines[0] == "slurmml: run s1-0 belongs to someone-else; slurmml acts only on your own runs"
    assert not (tmp_path / "called").exists()
    registry.conn.execute("UPDATE sweeps SET user = ?", (__import__("getpass").getuser(),))
    out = runner.invoke(main, ["cancel", "s1-0"])
    assert out.exit_code == 0 and out.output == "cancelled run s1-0 (Slurm job 123_4)\n"
    assert (tmp_path / "called").read_text() == "called\n"
    for command in ("cancel", "requeue", "clone"):
        assert runner.invoke(main, [command, "--help"]).exit_code == 0


def test_a_clone_gets_the_real_values_behind_masked_overrides() -> None:
    from slurmml.launcher.overrides import unmask_overrides

    parent = ["x=1", "+api_key=sk-1", "+db={host:h,password:pw}", "note=***"]
    # what the registry shows (and the TUI's clone editor starts from), edited
    edited = ["x=2", "+api_key=***", "++db={host:h,password:***}", "note=***"]
    assert unmask_overrides(edited, parent) == ["x=2", "+api_key=sk-1", "++db={host:h,password:pw}", "note=***"]
    assert unmask_overrides(["api_key=new"], parent) == ["api_key=new"]
    assert merge_overrides(parent, ["api_key=***"]) == ["x=1", "+api_key=***", "+db={host:h,password:pw}", "note=***"]
    for refused in ("+token=***", "+db={host:other,password:***}"):  # nothing to stand for: never run with "***"
        with pytest.raises(SlurmmlError, match=r"stands for a masked secret.*give the value itself"):
            unmask_overrides([refused], parent)
