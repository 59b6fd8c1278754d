"""The registry fed by real jobs on the dev cluster: many concurrent writers, and a task killed mid-logging."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from slurmml.registry.registry import Registry
from slurmml.tracking.spool import parse_chunk
from tests.conftest import copy_app, run_app

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

WAIT = ["hydra/launcher=slurmml", "hydra.launcher.wait=true", "hydra.launcher.poll_interval_s=5"]


@pytest.fixture
def logger_app(tmp_path: Path) -> Path:
    return copy_app("logger", tmp_path)


def sweep_id_of(stderr: str) -> str:
    match = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", stderr)
    assert match, stderr
    return match.group(1)


def registry() -> Registry:
    return Registry(Path(os.environ["SLURMML_HOME"]) / "registry.db", create=False)


def test_64_tasks_logging_at_once_lose_nothing(logger_app: Path, unique_name: str) -> None:
    result = run_app(["logger.py", "-m", "task=range(64)", "hydra.launcher.array_parallelism=64",
                      f"hydra.launcher.name={unique_name}", "hydra.sweep.dir=sweep", *WAIT], cwd=logger_app)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_id_of(result.stderr)
    reg = registry()
    reg.ingest()
    runs = reg.runs(sweep=sweep)
    assert len(runs) == 64 and {r["state"] for r in runs} == {"COMPLETED"}
    points = reg.conn.execute("SELECT count(*) FROM metrics JOIN runs USING (run) WHERE sweep_id = ?",
                              (sweep,)).fetchone()[0]
    assert points == 1_280_000
    summaries = reg.conn.execute(
        "SELECT count(DISTINCT run), min(count), max(count), min(last_step), max(last_step) "
        "FROM metric_summary JOIN runs USING (run) WHERE sweep_id = ?", (sweep,)).fetchone()
    assert tuple(summaries) == (64, 5000, 5000, 4999, 4999)
    assert {r["task"] for r in runs} == {float(t) for t in range(64)}
    for log in (logger_app / "sweep" / ".slurmml" / "logs").glob("*_log.err"):
        text = log.read_text()
        assert "Traceback" not in text and "rror" not in text, f"{log}:\n{text[-2000:]}"


def test_task_killed_mid_logging_keeps_what_reached_its_spool(logger_app: Path, unique_name: str) -> None:
    result = run_app(["logger.py", "-m", "task=7", "kill_at_step=3000", f"hydra.launcher.name={unique_name}",
                      "hydra.sweep.dir=sweep", *WAIT], cwd=logger_app)
    assert result.returncode != 0  # the task never returned
    sweep = sweep_id_of(result.stderr)
    reg = registry()
    reg.ingest()
    (run,) = reg.runs(sweep=sweep)
    assert run["state"] == "FAILED"  # never left RUNNING: the poller recorded Slurm's final word
    detail = reg.run(run["id"])
    assert "killed by signal 9" in detail["error"]
    spool = Path(reg.conn.execute("SELECT spool_path FROM runs WHERE id = ?", (run["id"],)).fetchone()[0])
    chunk = parse_chunk(spool.read_bytes())
    on_disk = sum(len(r["v"]) for r in chunk.records if r["k"] == "m")
    assert on_disk >= 4 * 3000  # what was logged before the pause had been flushed
    assert sum(m["count"] for m in detail["metrics"].values()) == on_disk
