"""Run actions on real sweeps: cancel, requeue and clone on the dev cluster, each run followed to its end by
the real Poller (5 s intervals, the minimum); and a clone of a local sweep, which needs no cluster.

Slurm holds a requeued job about 2 minutes (BeginTime) before it may start again: the requeue test moves
its start to now with `scontrol update`, as test_states_cluster.py does, to stay quick (about 90 s in all).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slurmml.control.actions import cancel_run, clone_run, requeue_run
from slurmml.launcher import batch
from slurmml.poller.loop import Poller, poll_until_final
from slurmml.core.states import FINAL_STATES
from slurmml.registry.registry import Registry
from tests.slurm_calls import SlurmCallCounter
from slurmml.slurm.commands import run_command
from tests.conftest import copy_app, run_app, wait_until

def registry() -> Registry:
    return Registry(Path(os.environ["SLURMML_HOME"]) / "registry.db", create=False)


def launch(app: Path, script: str, *overrides: str) -> str:
    result = run_app([script, "-m", *overrides], cwd=app)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", result.stderr)
    assert match, result.stderr
    return match.group(1)


def poller_on(reg: Registry) -> Poller:
    return Poller(reg, squeue_interval_s=5, sacct_interval_s=5)


def poll_until(poller: Poller, run_id: str, states: set[str], timeout_s: float = 90) -> str:
    def reached() -> str | None:
        poller.poll()
        poller.registry.ingest_one(run_id)  # what every view does between polls
        state = poller.registry.run(run_id)["state"]
        return state if state in states else None

    return wait_until(reached, timeout_s, interval_s=1, what=f"run {run_id} to be {' or '.join(sorted(states))}")


def cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slurmml", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture
def job_name(unique_name: str):
    """The sweeps' job name; whatever is left of them is cancelled when the test ends, passed or not."""
    yield unique_name
    run_command(["scancel", f"--name={unique_name}"])


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_cancel_a_running_run_and_refuse_another_users(tmp_path: Path, job_name: str,
                                                       slurm_calls: SlurmCallCounter) -> None:
    app = copy_app("tiny", tmp_path / "app")
    sweep = launch(app, "tiny.py", "hydra/launcher=slurmml", f"hydra.launcher.name={job_name}", "hydra.sweep.dir=out",
                   "x=1", "sleep_s=120")
    run_id = f"{sweep}-0"
    reg = registry()
    poller = poller_on(reg)
    poll_until(poller, run_id, {"RUNNING"})

    # someone else's run: refused before any Slurm command, from the API and from the CLI
    reg.conn.execute("UPDATE sweeps SET user = 'someone-else' WHERE id = ?", (sweep,))
    counted = lambda argv, **kw: run_command(argv, env=slurm_calls.environ(), **kw)  # noqa: E731
    for action in (cancel_run, requeue_run):
        answer = action(reg, run_id, run=counted)
        assert not answer.ok and answer.message == (f"run {run_id} belongs to someone-else; "
                                                    f"slurmml acts only on your own runs")
    for command in ("cancel", "requeue", "clone"):
        out = cli([command, run_id], env=slurm_calls.environ())
        assert out.returncode == 1 and out.stderr.count("\n") == 1 and "belongs to someone-else" in out.stderr
    assert slurm_calls.counts() == {}  # no scancel, scontrol or sbatch at all
    reg.conn.execute("UPDATE sweeps SET user = ? WHERE id = ?", (__import__("getpass").getuser(), sweep))

    answer = cancel_run(reg, run_id, run=counted)
    assert answer.ok, answer.message
    assert answer.message == f"cancelled run {run_id} (Slurm job {reg.run(run_id)['slurm_job_id']})"
    assert slurm_calls.counts()["scancel"] == 1
    states = poll_until_final(poller, [run_id], timeout_s=90)
    run = reg.run(run_id)
    assert states[run_id] == "CANCELLED" == run["state"], run
    assert re.search(r"CANCELLED by \w+ \(uid \d+\)", run["error"])
    again = cancel_run(reg, run_id)
    assert not again.ok and "has already ended (CANCELLED)" in again.message


def squeue_state(job_id: str) -> str:
    out = run_command(["squeue", "--noheader", "--array", f"--jobs={job_id}", "--format=%T"])
    return out.stdout.strip() or "GONE"


def wait_for_restart(job_id: str) -> None:
    """A requeued job waits for its last credential to expire (the dev cluster's cred_expire, 10 s), then starts."""
    def started() -> bool:
        return squeue_state(job_id) != "PENDING"

    wait_until(started, timeout_s=60, interval_s=1, what=f"requeued job {job_id} to start again")


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_requeue_finished_runs_reruns_them_and_counts_a_restart(tmp_path: Path, job_name: str) -> None:
    app = copy_app("ends", tmp_path / "app")
    sweep = launch(app, "ends.py", "hydra/launcher=slurmml", f"hydra.launcher.name={job_name}", "hydra.sweep.dir=out",
                   "case=ok,fail")
    reg = registry()
    runs = {row["overrides"]: row["id"] for row in reg.runs(sweep=sweep)}
    ok, fail = runs["case=ok"], runs["case=fail"]
    poller = poller_on(reg)
    assert poll_until_final(poller, [ok, fail], timeout_s=90) == {ok: "COMPLETED", fail: "FAILED"}

    for run_id in (ok, fail):
        answer = requeue_run(reg, run_id)
        assert answer.ok, answer.message
        run = reg.run(run_id)
        assert (run["state"], run["ended"], run["error"]) == ("QUEUED", None, None)
        assert (run["states"][-1]["state"], run["states"][-1]["source"]) == ("QUEUED", "user")
    poller.poll()
    assert {reg.run(r)["state"] for r in (ok, fail)} == {"QUEUED"}  # not settled back to how they ended
    for run_id in (ok, fail):
        wait_for_restart(reg.run(run_id)["slurm_job_id"])

    assert poll_until_final(poller, [ok, fail], timeout_s=120) == {ok: "COMPLETED", fail: "FAILED"}
    for run_id in (ok, fail):
        run = reg.run(run_id)
        assert run["restarts"] >= 1, run
        assert run["metrics"]["score"]["count"] == 2 and run["metrics"]["score"]["last_step"] == 1  # step = restarts
        history = [s["state"] for s in run["states"]]
        assert history.index("QUEUED", 1) < len(history) - 1 and history.count("RUNNING") >= 2, history
    assert "ends app failing on purpose" in reg.run(fail)["error"]


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_clone_with_a_change_and_a_bad_clone_that_queues_nothing(tmp_path: Path, job_name: str,
                                                                 slurm_calls: SlurmCallCounter) -> None:
    app = copy_app("tiny", tmp_path / "app")
    sweep = launch(app, "tiny.py", "hydra/launcher=slurmml", f"hydra.launcher.name={job_name}", "hydra.sweep.dir=out",
                   "x=1,2")
    reg = registry()
    parent = f"{sweep}-1"
    before = {row["id"] for row in reg.runs(sweep=sweep)}

    # bad overrides: one line, exit 1, nothing recorded, no sbatch
    for overrides, words in ((["nosuch=1"], "Could not override 'nosuch'. To append to your config use +nosuch=1"),
                             (["x=[1"], "no viable alternative at input '[1'"),
                             (["hydra.launcher.timeout_min=5"], "overrides of hydra.launcher do not apply")):
        out = cli(["clone", parent, *overrides], env=slurm_calls.environ())
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("slurmml: ") and words in out.stderr, out.stderr
    answer = clone_run(reg.path, parent, ["x=1,2"])
    assert not answer.ok and answer.new_run_id is None
    assert answer.message.startswith("cannot clone with x=1,2: Ambiguous value")
    assert slurm_calls.counts()["sbatch"] == 0
    # sbatch refusing the clone (an sbatch first on PATH that says what the real one says for a bad partition)
    refusing = tmp_path / "refusing"
    refusing.mkdir()
    (refusing / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: "
                                     "Invalid partition name specified' >&2\nexit 1\n")
    (refusing / "sbatch").chmod(0o755)
    out = cli(["clone", parent, "x=9"], env={**os.environ, "PATH": f"{refusing}:{os.environ['PATH']}"})
    assert out.returncode == 1
    assert out.stderr == ("slurmml: sbatch refused the job: Batch job submission failed: "
                          "Invalid partition name specified\n")
    assert {row["id"] for row in reg.runs(sweep=sweep)} == before
    assert sorted(p.name for p in (app / "out" / ".slurmml" / sweep).iterdir()) == ["batch_0", "sweep.json"]

    # the TUI's call: the whole edited override list, in a subprocess
    answer = clone_run(reg.path, parent, ["x=5", "sleep_s=1"])
    assert answer.ok, answer.message
    child = answer.new_run_id
    assert child == f"{sweep}-2"  # the sweep's next job number
    assert re.fullmatch(rf"cloned {parent} as {child} \(job \d+\)", answer.message)
    # and the CLI's: a change merged into the parent's overrides
    out = cli(["clone", parent, "sleep_s=2"])
    assert out.returncode == 0, out.stderr
    grandchild = re.fullmatch(rf"cloned {parent} as (\S+) \(job \d+\)\n", out.stdout).group(1)

    poller = poller_on(reg)
    assert poll_until_final(poller, [child, grandchild], timeout_s=90) == {child: "COMPLETED", grandchild: "COMPLETED"}
    reg.ingest()
    run = reg.run(child)
    assert run["parent_id"] == parent and run["overrides"] == ["x=5", "sleep_s=1"] and run["job_num"] == 2
    assert run["config"]["x"] == 5 and run["config"]["sleep_s"] == 1
    assert reg.conn.execute("SELECT value FROM params JOIN runs USING (run) WHERE id = ? AND key = 'x'",
                            (child,)).fetchone()[0] == "5"
    assert run["run_dir"] == str(app / "out" / "2") and run["slurm_job_id"] and Path(run["log_path"]).is_file()
    assert batch.read_result(Path(run["spool_path"]).parent.parent, 0).return_value == 10  # x * 2, as the app returns
    assert reg.run(grandchild)["overrides"] == ["x=2", "sleep_s=2"] and reg.run(grandchild)["parent_id"] == parent


def test_clone_of_a_local_run_starts_it_here(tmp_path: Path) -> None:
    """No cluster needed: a local sweep's clone runs as a detached process on this machine."""
    app = copy_app("tiny", tmp_path / "app")
    sweep = launch(app, "tiny.py", "hydra/launcher=slurmml_local", "hydra.sweep.dir=out", "x=1")
    reg = registry()
    parent = f"{sweep}-0"
    answer = clone_run(reg.path, parent, ["x=3"])
    assert answer.ok, answer.message
    assert re.fullmatch(rf"cloned {parent} as {sweep}-1 \(local process \d+\)", answer.message)

    def ended() -> dict | None:
        reg.ingest()
        run = reg.run(answer.new_run_id)
        return run if run["state"] in FINAL_STATES else None

    run = wait_until(ended, timeout_s=60, interval_s=0.5, what="the local clone to end")
    assert run["state"] == "COMPLETED" and run["config"]["x"] == 3 and run["parent_id"] == parent
    assert run["slurm_job_id"] is None and run["log_path"].endswith("batch_1/logs/0.err")
    assert Path(run["log_path"]).is_file()
    assert requeue_run(reg, answer.new_run_id).message.endswith("there is no Slurm job to requeue; clone it instead")


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_a_clone_on_slurm_gets_the_secrets_the_registry_masks(tmp_path: Path, job_name: str) -> None:
    """The registry keeps `***` for the key and the token in the launcher's setup line; the clone's job gets both."""
    secret = f"sk-{job_name}"
    app = copy_app("tiny", tmp_path / "app")
    sweep = launch(app, "tiny.py", "hydra/launcher=slurmml", f"hydra.launcher.name={job_name}", "hydra.sweep.dir=out",
                   "x=1", f"+api_key={secret}", f"hydra.launcher.setup=['export HF_TOKEN={secret}']")
    reg = registry()
    parent = f"{sweep}-0"
    recorded = reg.run_with_sweep(parent)
    assert recorded["overrides"] == ["x=1", "+api_key=***"]
    assert recorded["launcher"]["setup"] == ["export HF_TOKEN=***"] and secret not in json.dumps(recorded)

    answer = clone_run(reg.path, parent, ["x=2", "+api_key=***"])  # what the TUI's clone editor sends back
    assert answer.ok, answer.message
    assert poll_until_final(poller_on(reg), [answer.new_run_id], timeout_s=90) == {answer.new_run_id: "COMPLETED"}
    script = next((app / "out" / ".slurmml" / sweep / "batch_1").glob("*.sbatch")).read_text()
    assert f"export HF_TOKEN={secret}" in script
    assert f"api_key: {secret}" in (app / "out" / "1" / ".hydra" / "config.yaml").read_text()
    assert reg.run(answer.new_run_id)["overrides"] == ["x=2", "+api_key=***"]
