"""Sweeps submitted to the real dev cluster: arrays, throttling, failures, dry runs, nested sweeps."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slurmml.slurm.commands import run_command
from slurmml.slurm.parse import parse_squeue
from tests.conftest import ROOT, copy_app, run_app, sacct_states, sacct_when, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

TRAIN = str(ROOT / "examples" / "train.py")
HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A copy of the tiny app in a directory whose name a shell would trip over."""
    return copy_app("tiny", tmp_path / "a dir with 'quotes' & $paces")


def queued_job_id(stderr: str) -> str:
    match = re.search(r"as job (\d+)", stderr)
    assert match, stderr
    return match.group(1)


def test_fifty_point_sweep_is_throttled_and_completes(tmp_path: Path, unique_name: str) -> None:
    result = run_app(
        [TRAIN, "-m", "hydra/launcher=slurmml", "seed=range(50)", "epochs=2",
         "hydra.launcher.array_parallelism=8", f"hydra.launcher.name={unique_name}", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "50 task(s) as job" in result.stderr and "(50 tasks), at most 8 at once" in result.stderr
    job_id = queued_job_id(result.stderr)

    most_running, saw_throttle = 0, False

    def queue_drained() -> bool:
        nonlocal most_running, saw_throttle
        out = run_command(["squeue", "--noheader", "--array", f"--jobs={job_id}", "--format=%i|%T|%r"])
        tasks = parse_squeue(out.stdout) if out.ok else []
        most_running = max(most_running, sum(t.state == "RUNNING" for t in tasks))
        saw_throttle |= any(t.reason == "JobArrayTaskLimit" for t in tasks)
        return out.ok and not tasks

    wait_until(queue_drained, timeout_s=900, interval_s=1, what="the 50-task array to leave squeue")
    assert 0 < most_running <= 8
    assert saw_throttle, "squeue never showed tasks held back by the %8 throttle"
    states = sacct_when(unique_name, 50, done=True)
    assert set(states.values()) == {"COMPLETED"}
    assert sorted(states) == sorted(f"{job_id}_{i}" for i in range(50))

    status = run_app(["-m", "slurmml", "status", f"{tmp_path}/sweep", "--json"], cwd=tmp_path)
    assert [row["state"] for row in json.loads(status.stdout)] == ["COMPLETED"] * 50


def test_failing_task_is_failed_in_slurm_with_its_traceback(tiny: Path, unique_name: str) -> None:
    result = run_app(
        ["tiny.py", "-m", "hydra/launcher=slurmml", "fail=false,true", "hydra.launcher.wait=true",
         "hydra.launcher.poll_interval_s=5", f"hydra.launcher.name={unique_name}", "hydra.sweep.dir=sweep"],
        cwd=tiny,
    )
    assert result.returncode != 0
    assert "1 completed, 1 failed" in result.stderr
    assert "tiny app failing on purpose" in result.stderr
    states = sacct_when(unique_name, 2, done=True)
    job_id = next(iter(states)).split("_")[0]
    assert states == {f"{job_id}_0": "COMPLETED", f"{job_id}_1": "FAILED"}
    err_log = (tiny / "sweep" / ".slurmml" / "logs" / f"{job_id}_1_0_log.err").read_text()
    assert "Traceback" in err_log and "ValueError: tiny app failing on purpose (x=0)" in err_log




def test_dry_run_prints_scripts_and_submits_nothing(tiny: Path, slurm_calls) -> None:
    result = run_app(
        ["tiny.py", "-m", "hydra/launcher=slurmml", "x=1,2,3", "hydra.launcher.dry_run=true",
         "hydra.launcher.array_parallelism=2", "hydra.sweep.dir=sweep"],
        cwd=tiny, env=slurm_calls.environ(),
    )
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --array=0-2%2" in result.stdout
    assert "export PYTHONUNBUFFERED=1" in result.stdout  # the default template's setup line
    assert slurm_calls.counts()["sbatch"] == 0
    assert not list((tiny / "sweep").glob(".slurmml/*/batch_*/payload.pkl"))


def test_queueing_costs_one_sbatch_per_array_and_no_polling(tiny: Path, slurm_calls, unique_name: str) -> None:
    result = run_app(
        ["tiny.py", "-m", "hydra/launcher=slurmml", "x=range(5)", "hydra.launcher.max_array_size=2",
         f"hydra.launcher.name={unique_name}", "hydra.sweep.dir=sweep"],
        cwd=tiny, env=slurm_calls.environ(),
    )
    assert result.returncode == 0, result.stderr
    assert "at most" not in result.stderr  # %2 on arrays of 2 holds nothing back
    calls = slurm_calls.counts()
    assert calls["sbatch"] == 3  # 5 tasks in arrays of at most 2
    assert calls["squeue"] == 0 and calls["sacct"] == 0
    scripts = sorted((tiny / "sweep").glob(".slurmml/*/batch_0/array_*.sbatch"))
    assert [re.search(r"--array=(\S+)", s.read_text()) and re.search(r"--array=(\S+)", s.read_text()).group(1)
            for s in scripts[:2]] == ["0-1%2", "0-1%2"]
    states = sacct_when(unique_name, 5, done=True)
    assert set(states.values()) == {"COMPLETED"}
    assert len({job.split("_")[0] for job in states}) == 3
    outputs = sorted(p.parent.name for p in (tiny / "sweep").glob("*/env.json"))
    assert outputs == ["0", "1", "2", "3", "4"]


BAD_INPUT = [
    (["hydra.launcher.nosuch_field=1"], "nosuch_field"),
    (["nosuch_key=1"], "nosuch_key"),
    (["hydra.launcher.gpus_per_node=8"], "gpus_per_node=8 but no node in partition gpu has more than 4 GPUs"),
    (["hydra.launcher.partition=nosuch"], "unknown partition 'nosuch'"),
    (["hydra.launcher.template=nosuch"], "template 'nosuch' not found"),
    (["hydra.launcher.constraint=nosuchfeature"], "sbatch refused the job: Batch job submission failed: Invalid feature"),
    (["hydra.launcher.gres=nosuch:1"], "sbatch refused the job: Invalid generic resource (gres) specification"),
    (["hydra.launcher.timeout_min=-1"], "timeout_min=-1 must be at least 1"),
    (["hydra.launcher.array_parallelism=0"], "array_parallelism=0 must be at least 1"),
    (["hydra.launcher.wait=true", "hydra.launcher.poll_interval_s=1"], "poll_interval_s=1 is below 5 s"),
]


@pytest.mark.parametrize("overrides, message", BAD_INPUT, ids=[m.split()[0] for _, m in BAD_INPUT])
def test_bad_input_is_one_clear_line_and_queues_nothing(
    tiny: Path, slurm_calls, unique_name: str, overrides: list[str], message: str
) -> None:
    home = tiny / "home"
    result = run_app(
        ["tiny.py", "-m", "hydra/launcher=slurmml", "x=1,2", f"hydra.launcher.name={unique_name}",
         "hydra.sweep.dir=sweep", *overrides],
        cwd=tiny, env=slurm_calls.environ({**os.environ, "SLURMML_HOME": str(home)}),
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if "slurmml:" in result.stderr:  # our own errors: one line, then Hydra's standard hint
        assert [line for line in result.stderr.splitlines() if line.strip()][-2:] == [
            next(line for line in result.stderr.splitlines() if line.startswith("slurmml:")), HYDRA_HINT]
    assert slurm_calls.counts()["sbatch"] <= (1 if "sbatch refused" in message else 0)
    assert sacct_states(unique_name) == {}
    if (tiny / "sweep").exists():  # Hydra's multirun.yaml, nothing of slurmml's
        assert [p.name for p in (tiny / "sweep").iterdir()] == ["multirun.yaml"]
    assert_nothing_recorded(home, tiny)


def assert_nothing_recorded(home: Path, cwd: Path) -> None:
    """No sweep record under $SLURMML_HOME, no registry rows: `sweeps` and `status` know of no sweep."""
    env = {**os.environ, "SLURMML_HOME": str(home)}
    assert not list(home.glob("sweeps/*.json"))
    sweeps = run_app(["-m", "slurmml", "sweeps", "--json"], cwd=cwd, env=env)
    assert sweeps.returncode != 0 or json.loads(sweeps.stdout) == [], sweeps.stdout + sweeps.stderr
    status = run_app(["-m", "slurmml", "status", "sweep", "--json"], cwd=cwd, env=env)
    assert status.returncode != 0 and status.stderr.startswith("slurmml: no sweep"), status.stdout + status.stderr


def test_a_refused_sweep_keeps_what_was_in_its_folder_and_leaves_nothing_else(tiny: Path, unique_name: str) -> None:
    home = tiny / "home"
    logs = tiny / "sweep" / ".slurmml" / "logs"
    logs.mkdir(parents=True)  # an earlier sweep's log folder, and the user's own file
    (logs / "1_0_log.err").write_text("old")
    (tiny / "sweep" / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(tiny / "sweep") for p in (tiny / "sweep").rglob("*"))
    result = run_app(
        ["tiny.py", "-m", "hydra/launcher=slurmml", "x=1,2", "hydra.launcher.gres=gpu:nosuch:1",
         f"hydra.launcher.name={unique_name}",
         "hydra.sweep.dir=sweep"],
        cwd=tiny, env={**os.environ, "SLURMML_HOME": str(home)},
    )
    assert result.returncode != 0
    assert "slurmml: sbatch refused the job:" in result.stderr and "Traceback" not in result.stderr
    after = sorted(p.relative_to(tiny / "sweep") for p in (tiny / "sweep").rglob("*"))
    assert [p for p in after if p.name != "multirun.yaml"] == before
    assert (logs / "1_0_log.err").read_text() == "old"
    assert_nothing_recorded(home, tiny)


def test_without_sbatch_slurm_says_so_and_local_runs_the_same_sweep(tiny: Path) -> None:
    env = {"PATH": "/nonexistent", "HOME": str(tiny)}
    refused = run_app(["tiny.py", "-m", "hydra/launcher=slurmml", "x=1,2", "hydra.sweep.dir=sweep"], cwd=tiny, env=env)
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert lines[0] == ("slurmml: sbatch not found on PATH: this machine cannot submit to Slurm (run the sweep here "
                        "with hydra/launcher=slurmml_local)")
    assert lines[1:] == [HYDRA_HINT]
    local = run_app(["tiny.py", "-m", "hydra/launcher=slurmml_local", "x=1,2", "hydra.sweep.dir=sweep"], cwd=tiny, env=env)
    assert local.returncode == 0, local.stderr
    for num in ("0", "1"):
        assert (tiny / "sweep" / num / ".hydra" / "overrides.yaml").is_file()
        assert (tiny / "sweep" / num / "env.json").is_file()


def test_nested_sweep_does_not_inherit_the_parent_jobs_settings(tiny: Path, unique_name: str) -> None:
    """A job asking for 3 CPUs submits a sweep of 1-CPU tasks: its SLURM_* must not leak into them."""
    sweep = (
        f"'{sys.executable}' tiny.py -m hydra/launcher=slurmml x=1,2 hydra.sweep.dir=child "
        f"hydra.launcher.wait=true hydra.launcher.poll_interval_s=5 hydra.launcher.name={unique_name}-child"
    )
    parent = subprocess.run(
        ["sbatch", "--wait", "--cpus-per-task=3", f"--job-name={unique_name}", "--output=parent.log", "--wrap", sweep],
        cwd=tiny, capture_output=True, text=True, timeout=300,
    )
    assert parent.returncode == 0, (tiny / "parent.log").read_text()
    child_states = sacct_when(f"{unique_name}-child", 2, done=True)
    assert set(child_states.values()) == {"COMPLETED"}
    for num in ("0", "1"):
        seen = json.loads((tiny / "child" / num / "env.json").read_text())
        assert seen.get("SLURM_CPUS_PER_TASK") != "3"
        assert seen["SLURM_ARRAY_JOB_ID"] in {job.split("_")[0] for job in child_states}


def test_the_peers_python_and_null_tasks_per_node_run(tiny: Path, unique_name: str) -> None:
    result = run_app(
        ["tiny.py", "-m", "hydra/launcher=slurmml", "x=1", "hydra.launcher.wait=true", "hydra.launcher.poll_interval_s=5",
         "hydra.launcher.tasks_per_node=null", f"hydra.launcher.python='/usr/bin/env SLURM_WRAPPED=yes {sys.executable}'",
         f"hydra.launcher.name={unique_name}", "hydra.sweep.dir=sweep"],
        cwd=tiny,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tiny / "sweep" / "0" / "env.json").read_text())["SLURM_WRAPPED"] == "yes"
    (script,) = (tiny / "sweep").glob(".slurmml/*/batch_0/array_0.sbatch")
    assert "--ntasks-per-node" not in script.read_text()


@pytest.mark.parametrize("gpus", [None, 1], ids=["cpu", "gpu"])
def test_only_a_job_with_gpus_says_it_has_no_nvml(tiny: Path, unique_name: str, gpus: int | None) -> None:
    result = run_app(
        ["tiny.py", "-m", "hydra/launcher=slurmml", "x=1", "hydra.launcher.wait=true", "hydra.launcher.poll_interval_s=5",
         f"hydra.launcher.gpus_per_node={'null' if gpus is None else gpus}", f"hydra.launcher.name={unique_name}",
         "hydra.sweep.dir=sweep"],
        cwd=tiny,
    )
    assert result.returncode == 0, result.stderr
    (err,) = (tiny / "sweep" / ".slurmml" / "logs").glob("*_log.err")
    # the dev cluster's GPUs are placeholder files: there is no NVML to find
    assert ("slurmml: no NVML (" in err.read_text()) == (gpus is not None), err.read_text()


def test_a_task_that_cannot_be_pickled_queues_nothing_and_leaves_nothing(tiny: Path, slurm_calls) -> None:
    from tests.test_launcher_input import UNPICKLABLE_APP

    home = tiny / "home"
    (tiny / "locked.py").write_text(UNPICKLABLE_APP)
    result = run_app(["locked.py", "-m", "hydra/launcher=slurmml", "x=1,2", "hydra.sweep.dir=sweep"],
                     cwd=tiny, env=slurm_calls.environ({**os.environ, "SLURMML_HOME": str(home)}))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()][-2:] == [
        "slurmml: cannot pickle the task for its jobs: cannot pickle '_thread.lock' object", HYDRA_HINT]
    assert slurm_calls.counts()["sbatch"] == 0
    assert [p.name for p in (tiny / "sweep").iterdir()] == ["multirun.yaml"]
    assert_nothing_recorded(home, tiny)


SBATCH_TIMEOUT_S = 15
# The real tiny app, with the launcher's sbatch timeout shortened so the test need not wait 120 s for it
SHORT_SBATCH_TIMEOUT = ("import runpy, sys; import slurmml.launcher.slurm_backend as backend; "
                        f"backend.SBATCH_TIMEOUT_S = {SBATCH_TIMEOUT_S}; "
                        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def test_sbatch_that_queues_but_does_not_answer_keeps_what_the_job_reads(tiny: Path, unique_name: str) -> None:
    """sbatch queues the job, then its answer is lost (a slow controller): the job must still find its batch."""
    home, bin_dir = tiny / "home", tiny / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\n"{shutil.which("sbatch")}" "$@"\nexec sleep 600\n')
    (bin_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "SLURMML_HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = run_app(["-c", SHORT_SBATCH_TIMEOUT, "tiny.py", "-m", "hydra/launcher=slurmml", "x=1,2",
                      f"hydra.launcher.name={unique_name}", "hydra.sweep.dir=sweep"], cwd=tiny, env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (sweep_id,) = [p.name for p in (tiny / "sweep" / ".slurmml").iterdir() if p.name != "logs"]
    assert [line for line in result.stderr.splitlines() if line.strip()][-2:] == [
        f"slurmml: sbatch did not answer within {SBATCH_TIMEOUT_S} s: the job may have been queued all the same; "
        f"check with `squeue --me` or `slurmml status {sweep_id}`", HYDRA_HINT]
    assert (tiny / "sweep" / ".slurmml" / sweep_id / "sweep.json").is_file()
    from slurmml.registry.registry import Registry

    with Registry(home / "registry.db", create=False) as registry:
        assert sorted(r["id"] for r in registry.runs(sweep=sweep_id)) == [f"{sweep_id}-0", f"{sweep_id}-1"]
    assert set(sacct_when(unique_name, 2, done=True).values()) == {"COMPLETED"}  # it read the staged batch
    assert (tiny / "sweep" / "0" / "env.json").is_file() and (tiny / "sweep" / "1" / "env.json").is_file()
