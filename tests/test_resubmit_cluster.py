"""`slurmml resubmit` on the real dev cluster: a sweep's FAILED and OUT_OF_MEMORY tasks run again as one new
array, with more memory, as new executions of the same runs; the completed one is left alone."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmml.cli import main
from slurmml.registry.registry import Registry
from tests.conftest import copy_app, ended_runs, run_app, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def test_failed_and_out_of_memory_tasks_are_resubmitted_with_more_memory(tmp_path: Path, unique_name: str) -> None:
    app = copy_app("ends", tmp_path / "ends")
    result = run_app(["ends.py", "-m", "hydra/launcher=slurmml", "case=ok,flaky,memory", "mem_mb=1400", "sleep_s=25",
                      "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=2", "hydra.launcher.partition=cpu",
                      "hydra.launcher.wait=true", "hydra.launcher.poll_interval_s=5",
                      f"hydra.launcher.name={unique_name}", "hydra.sweep.dir=sweep"], cwd=app)
    sweep = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", result.stderr).group(1)
    runs = ended_runs(sweep)
    assert [r["state"] for r in runs] == ["COMPLETED", "FAILED", "OUT_OF_MEMORY"], [(r["state"], r["error"]) for r in runs]
    first_jobs = [r["slurm_job_id"] for r in runs]

    dry = CliRunner().invoke(main, ["resubmit", sweep, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would resubmit 2 run(s)" in dry.output and "--array=1-2" in dry.output
    assert ended_runs(sweep) == runs  # nothing submitted

    again = CliRunner().invoke(main, ["resubmit", sweep, "mem_gb=2"])
    assert again.exit_code == 0, again.output
    job = re.search(r"as job (\d+)", again.output).group(1)
    script = next((app / "sweep" / ".slurmml" / sweep / "batch_0").glob("resubmit_*.sbatch")).read_text()
    assert "#SBATCH --array=1-2" in script and "#SBATCH --mem=2GB" in script

    runs = wait_until(lambda: ended_runs(sweep), timeout_s=240, interval_s=3, what="the resubmitted runs to end")
    assert [r["state"] for r in runs] == ["COMPLETED"] * 3, [(r["state"], r["error"]) for r in runs]
    assert runs[0]["slurm_job_id"] == first_jobs[0]  # the completed run was left alone
    for run, before in zip(runs[1:], first_jobs[1:]):
        assert run["slurm_job_id"].startswith(f"{job}_")
        with Registry(Path(os.environ["SLURMML_HOME"]) / "registry.db", create=False) as reg:
            executions = reg.run(run["id"])["executions"]
        assert [(e["job_id"], e["state"]) for e in executions] == [(before, executions[0]["state"]),
                                                                    (run["slurm_job_id"], "COMPLETED")]
        assert executions[0]["state"] in ("FAILED", "OUT_OF_MEMORY", "REQUEUED")

