"""Every run that ran under Slurm gets sacct's record, on the real dev cluster, even when nothing polled
while its jobs ran: a fire-and-forget sweep (wait=false) that ended before anything looked at it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slurmml.core.states import SLURM_FINAL
from tests.conftest import copy_app, run_app, sacct_when

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def test_a_sweep_that_ended_before_anything_polled_has_every_efficiency(tmp_path: Path, unique_name: str) -> None:
    app = copy_app("tiny", tmp_path / "app")
    # a registry of its own: its poller schedule is not shared with the other tests' pollers
    env = {**os.environ, "SLURMML_HOME": str(tmp_path / "home")}
    queued = run_app(["tiny.py", "-m", "hydra/launcher=slurmml", "x=range(10)", "sleep_s=1",
                      "hydra.launcher.timeout_min=5", f"hydra.launcher.name={unique_name}", "hydra.sweep.dir=sweep"],
                     cwd=app, env=env)
    assert queued.returncode == 0, queued.stderr[-3000:]
    sweep = re.search(r"queued sweep (\S+):", queued.stderr).group(1)
    sacct_when(unique_name, 10, timeout_s=180, done=True)  # sacct directly: the registry is never polled

    report = subprocess.run([sys.executable, "-m", "slurmml", "report", "--sweep", sweep, "--json"], env=env,
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert report.returncode == 0, report.stderr
    runs = json.loads(report.stdout)["runs"]
    assert len(runs) == 10
    for run in runs:
        assert run["state"] == "COMPLETED" and run["slurm_state"] in SLURM_FINAL, run
        assert run["accounting"] == "sacct", run
        assert run["cpu_eff"] is not None and run["mem_eff"] is not None and run["time_eff"] is not None, run
        assert run["timelimit_s"] == 300 and run["elapsed_s"] is not None, run
    assert "no accounting record" not in report.stderr
