"""torch.distributed across the tasks of one job on the real dev cluster: two srun tasks on one node join a gloo
group through the variables the job wrapper exports, and only rank 0 records the run."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from slurmml.registry.registry import Registry
from tests.conftest import copy_app, run_app

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def test_two_tasks_of_a_job_all_reduce_over_gloo(tmp_path: Path, unique_name: str) -> None:
    app = copy_app("ddp", tmp_path)
    result = run_app(["ddp.py", "-m", "hydra/launcher=slurmml", "hydra.launcher.tasks_per_node=2",
                      "hydra.launcher.cpus_per_task=1", "hydra.launcher.wait=true", "hydra.launcher.poll_interval_s=5",
                      "hydra.launcher.timeout_min=3", f"hydra.launcher.name={unique_name}", "hydra.sweep.dir=sweep"],
                     cwd=app, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", result.stderr).group(1)
    registry = Registry(Path(os.environ["SLURMML_HOME"]) / "registry.db", create=False)
    registry.ingest()
    (run,) = registry.runs(sweep=sweep)
    assert run["state"] == "COMPLETED" and run["result"] == 3.0, run
    metrics = registry.run(run["id"])["metrics"]
    assert {name: (m["last"], m["count"]) for name, m in metrics.items()} == {"world_size": (2.0, 1), "sum": (3.0, 1)}
    logs = sorted((app / "sweep" / ".slurmml" / "logs").glob("*_log.err"))
    assert len(logs) == 2, logs  # one per task: both ran
    for log in logs:
        assert "Traceback" not in log.read_text(), f"{log}:\n{log.read_text()[-2000:]}"
