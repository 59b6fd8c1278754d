"""Bad launcher input through real Hydra: one line, non-zero exit, nothing left behind; and the peer's newer
fields. Everything is refused before Slurm is asked, so no cluster is needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_app, run_app

HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return copy_app("tiny", tmp_path / "app")


def home_env(home: Path) -> dict[str, str]:
    return {**os.environ, "SLURMML_HOME": str(home)}


def assert_one_line(result: subprocess.CompletedProcess, line: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [text for text in result.stderr.splitlines() if text.strip()]
    assert lines == [line, HYDRA_HINT], result.stderr


def assert_nothing_left(sweep_dir: Path, home: Path) -> None:
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["multirun.yaml"]  # Hydra's own
    assert not (home / "sweeps").exists()  # a sweep index from before: nothing may write one
    if (home / "registry.db").exists():
        from slurmml.registry.registry import Registry

        with Registry(home / "registry.db", create=False) as registry:
            assert registry.sweeps() == [] and registry.runs() == []


NO_LIMIT = [
    ("slurmml", "timeout_min=-1", "timeout_min=-1 must be at least 1 (Slurm reads 0 or less as no time limit)"),
    ("slurmml", "timeout_min=0", "timeout_min=0 must be at least 1 (Slurm reads 0 or less as no time limit)"),
    ("slurmml", "mem_gb=0", "mem_gb=0 must be at least 1 (Slurm reads 0 as all of each node's memory)"),
    ("slurmml", "array_parallelism=0", "array_parallelism=0 must be at least 1 (Slurm reads %0 as no throttle)"),
    ("slurmml", "mem_per_cpu=0", "mem_per_cpu=0 must be more than 0 (Slurm reads 0 as all of each node's memory)"),
    ("slurmml", "nodes=0", "nodes=0 must be at least 1"),
    ("slurmml_local", "timeout_min=0", "timeout_min=0 must be at least 1 (Slurm reads 0 or less as no time limit)"),
    ("slurmml_local", "array_parallelism=0", "array_parallelism=0 must be at least 1 (Slurm reads %0 as no throttle)"),
]


@pytest.mark.parametrize("launcher, override, message", NO_LIMIT, ids=[f"{l}-{o}" for l, o, _ in NO_LIMIT])
def test_a_no_limit_value_is_one_line_and_leaves_nothing(tiny: Path, launcher: str, override: str, message: str) -> None:
    home = tiny / "home"
    result = run_app(["tiny.py", "-m", f"hydra/launcher={launcher}", "x=1,2", "hydra.sweep.dir=sweep",
                      f"hydra.launcher.{override}"], cwd=tiny, env=home_env(home))
    assert_one_line(result, f"slurmml: {message}")
    assert_nothing_left(tiny / "sweep", home)


def test_an_unknown_added_field_is_one_line(tiny: Path) -> None:
    home = tiny / "home"
    result = run_app(["tiny.py", "-m", "hydra/launcher=slurmml", "x=1,2", "hydra.sweep.dir=sweep",
                      "+hydra.launcher.nosuch=1"], cwd=tiny, env=home_env(home))
    assert_one_line(result, "slurmml: hydra.launcher.nosuch is not a launcher field "
                            "(other sbatch options go in hydra.launcher.additional_parameters)")
    assert_nothing_left(tiny / "sweep", home)


@pytest.mark.parametrize("launcher", ["slurmml_local", "slurmml"])
def test_slurmml_home_that_is_a_file_stops_the_launcher_in_one_line(tiny: Path, launcher: str) -> None:
    home = tiny / "home"
    home.write_text("not a folder")
    result = run_app(["tiny.py", "-m", f"hydra/launcher={launcher}", "x=1,2", "hydra.sweep.dir=sweep"],
                     cwd=tiny, env=home_env(home))
    assert_one_line(result, f"slurmml: SLURMML_HOME={home} is a file, not a folder")
    assert sorted(p.name for p in (tiny / "sweep").iterdir()) == ["multirun.yaml"]
    assert home.read_text() == "not a folder"


COMMANDS = [["info"], ["sweeps"], ["runs"], ["status", "x"], ["report"], ["watch", "x"], ["show", "x"], ["tui"],
            ["cancel", "x"], ["requeue", "x"], ["clone", "x"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_slurmml_home_that_is_a_file_is_one_line_from_every_command(tmp_path: Path, command: list[str]) -> None:
    home = tmp_path / "home"
    home.write_text("")
    result = subprocess.run([sys.executable, "-m", "slurmml", *command], capture_output=True, text=True,
                            env=home_env(home), stdin=subprocess.DEVNULL, timeout=120)
    assert result.returncode == 1
    assert result.stderr == f"slurmml: SLURMML_HOME={home} is a file, not a folder\n"


def test_each_batch_says_which_it_is_and_the_sweeps_total(tiny: Path) -> None:
    result = run_app(["tiny.py", "-m", "hydra/launcher=slurmml_local", "x=range(5)", "hydra.sweeper.max_batch_size=2",
                      "hydra.sweep.dir=sweep"], cwd=tiny, env=home_env(tiny / "home"))
    assert result.returncode == 0, result.stderr
    summaries = [line.split("; outputs in")[0] for line in result.stderr.splitlines() if ", batch " in line]
    sweep_id = summaries[0].split()[2].rstrip(",")
    assert summaries == [
        f"slurmml: sweep {sweep_id}, batch 1 (#0-#1): 2 completed, 0 failed",
        f"slurmml: sweep {sweep_id}, batch 2 (#2-#3): 2 completed, 0 failed; sweep so far: 4 completed, 0 failed",
        f"slurmml: sweep {sweep_id}, batch 3 (#4): 1 completed, 0 failed; sweep so far: 5 completed, 0 failed",
    ]


def test_the_peers_python_field_and_null_tasks_per_node_are_taken(tiny: Path) -> None:
    stubs = tiny / "bin"  # a dry run renders scripts, which needs srun on PATH (never run): no cluster needed
    stubs.mkdir()
    (stubs / "srun").write_text("#!/bin/sh\nexit 1\n")
    (stubs / "srun").chmod(0o755)
    env = {**home_env(tiny / "home"), "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}"}
    result = run_app(["tiny.py", "-m", "hydra/launcher=slurmml", "x=1,2", "hydra.sweep.dir=sweep",
                      "hydra.launcher.dry_run=true", "hydra.launcher.tasks_per_node=null",
                      f"hydra.launcher.python='/usr/bin/env PYTHONHASHSEED=0 {sys.executable}'"],
                     cwd=tiny, env=env)
    assert result.returncode == 0, result.stderr
    assert f"exec /usr/bin/env PYTHONHASHSEED=0 {sys.executable} -u -m slurmml.launcher.task" in result.stdout
    assert "--ntasks-per-node" not in result.stdout


UNPICKLABLE_APP = '''
import threading

import hydra

LOCK = threading.Lock()  # reachable from the task function: cannot be sent to a job


@hydra.main(version_base="1.3", config_path=".", config_name="tiny")
def main(cfg):
    with LOCK:
        return cfg.x


if __name__ == "__main__":
    main()
'''


def test_a_task_that_cannot_be_pickled_is_one_line_and_leaves_nothing(tiny: Path) -> None:
    home = tiny / "home"
    (tiny / "locked.py").write_text(UNPICKLABLE_APP)
    result = run_app(["locked.py", "-m", "hydra/launcher=slurmml_local", "x=1,2", "hydra.sweep.dir=sweep"],
                     cwd=tiny, env=home_env(home))
    assert_one_line(result, "slurmml: cannot pickle the task for its jobs: cannot pickle '_thread.lock' object")
    assert_nothing_left(tiny / "sweep", home)


def test_a_dry_run_without_slurms_commands_is_one_line(tiny: Path) -> None:
    """A workstation without Slurm: the preview says what it needs instead of submitit's traceback."""
    env = {**home_env(tiny / "home"), "PATH": os.path.dirname(sys.executable)}  # python, no Slurm commands
    result = run_app(["tiny.py", "-m", "hydra/launcher=slurmml", "x=1,2", "hydra.sweep.dir=sweep",
                      "hydra.launcher.dry_run=true"], cwd=tiny, env=env)
    assert_one_line(result, "slurmml: srun not found on PATH: sbatch scripts are rendered (also for a dry run) on a "
                            "machine with Slurm's commands (run the sweep here with hydra/launcher=slurmml_local)")
