"""Long jobs on the real dev cluster, with examples/train.py: requeued at its time limit and resumed until it has
trained long enough, preempted by a high-tier job and resumed without using up max_num_timeout, and DDP over
two nodes x two tasks that learns what one process learns.

The time-limit sweep takes the longest (several 1-minute executions): it is queued first, by a module fixture,
and checked last, so the other tests run while it trains.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from slurmml.registry.registry import Registry
from slurmml.slurm.commands import run_command
from tests.conftest import ROOT, ended_runs, run_app, sweep_runs, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

TRAIN = str(ROOT / "examples" / "train.py")
SMALL = ["n_samples=600", "model=linear"]  # fast epochs; no dropout, so ranks and a single process agree
# a node's one task holds torchrun and its 2 workers (each with torch imported): more than one CPU's 1 GB
TORCHRUN_NODE = ["hydra.launcher.cpus_per_task=2", "hydra.launcher.mem_gb=3"]


def launch(folder: Path, *overrides: str, timeout: float = 300) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    result = run_app([TRAIN, "-m", "hydra/launcher=slurmml", "hydra.launcher.poll_interval_s=5",
                      f"hydra.sweep.dir={folder}/sweep", *overrides], cwd=folder, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", result.stderr).group(1)


def registry() -> Registry:
    return Registry(Path(os.environ["SLURMML_HOME"]) / "registry.db", create=False)


def the_run(sweep: str) -> dict[str, Any]:
    (run,) = sweep_runs(sweep)
    return run


def ended(sweep: str) -> dict[str, Any] | None:
    runs = ended_runs(sweep)
    return runs[0] if runs else None


def each_step_once(run: dict[str, Any], metric: str) -> None:
    summary = run["metrics"][metric]
    with registry() as reg:
        steps = [row[0] for row in reg.conn.execute(
            "SELECT m.step FROM metrics m JOIN runs r USING (run) JOIN metric_keys k USING (key) "
            "WHERE r.id = ? AND k.name = ? ORDER BY m.step", (run["id"], metric))]
    assert steps == list(range(1, summary["last_step"] + 1)), "a step is missing or logged twice"


def requeue_counts(run: dict[str, Any]) -> dict[str, int]:
    from slurmml.tracking.requeue import counts_path

    return json.loads(counts_path(run["spool_path"]).read_text())


@pytest.fixture(scope="module")
def time_limited(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Queued once, before the other tests: 1-minute executions until 90 s of training have passed. Slurm warns
    15 to 45 s into each (plan.warning_lead_s), so that takes 3 to 6 executions."""
    folder = tmp_path_factory.mktemp("time_limited")
    return launch(folder, *SMALL, "epochs=1000000", "max_minutes=1.5", "hydra.launcher.timeout_min=1",
                  "hydra.launcher.max_num_timeout=8", "hydra.launcher.partition=cpu", "hydra.launcher.name=longjob")


@pytest.fixture(scope="module")
def not_requeueable(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Queued once, with the time-limited run: a job Slurm will not requeue (--no-requeue)."""
    folder = tmp_path_factory.mktemp("not_requeueable")
    return launch(folder, *SMALL, "epochs=1000000", "hydra.launcher.timeout_min=1", "hydra.launcher.max_num_timeout=3",
                  "hydra.launcher.partition=cpu", "+hydra.launcher.additional_parameters.no-requeue=true",
                  "hydra.launcher.name=norequeue"), folder


def test_queue_the_time_limited_runs_first(time_limited: str, not_requeueable: tuple[str, Path]) -> None:
    assert time_limited and not_requeueable  # the fixtures have queued them; the tests below run while they train


def test_a_preempted_run_is_requeued_and_resumed_without_using_a_timeout(tmp_path: Path, unique_name: str) -> None:
    sweep = launch(tmp_path, *SMALL, "epochs=1000000", "max_minutes=0.4", "hydra.launcher.timeout_min=10",
                   "hydra.launcher.max_num_timeout=0", "hydra.launcher.partition=low",
                   "+hydra.launcher.additional_parameters.nodelist=n1", f"hydra.launcher.name={unique_name}")

    def training() -> bool:
        run = the_run(sweep)
        return run["metrics"].get("loss", {}).get("count", 0) >= 20

    wait_until(training, timeout_s=180, interval_s=1, what="the low-tier run to train")
    high = run_command(["sbatch", "--parsable", "-p", "high", "-w", "n1", "--exclusive", "--time=1", "--output=/dev/null",
                        f"--job-name={unique_name}-high", "--wrap", "sleep 3"])
    assert high.ok, high.stderr
    run = wait_until(lambda: ended(sweep), timeout_s=240, interval_s=3, what="the preempted run to end")
    assert run["state"] == "COMPLETED", (run["state"], run["error"], run["executions"])
    first, *later = run["executions"]
    assert first["state"] == "REQUEUED" and first["reason"] == "PREEMPTED", run["executions"]
    assert later and later[-1]["state"] == "COMPLETED" and later[0]["resumed_from"] == first["checkpoint_step"]
    assert requeue_counts(run).get("TIMEOUT", 0) == 0  # max_num_timeout=0, and it was requeued all the same
    each_step_once(run, "loss")


def test_ddp_over_two_nodes_learns_what_one_process_learns(tmp_path: Path, unique_name: str) -> None:
    single = launch(tmp_path / "one", *SMALL, "epochs=4", "hydra.launcher.wait=true", "hydra.launcher.partition=cpu",
                    f"hydra.launcher.name={unique_name}")
    spread = launch(tmp_path / "four", *SMALL, "epochs=4", "hydra.launcher.wait=true", "hydra.launcher.nodes=2",
                    "hydra.launcher.tasks_per_node=2", "hydra.launcher.partition=multi", "hydra.launcher.timeout_min=5",
                    f"hydra.launcher.name={unique_name}")
    torchrun = launch(tmp_path / "torchrun", *SMALL, "epochs=4", "hydra.launcher.wait=true", "hydra.launcher.nodes=2",
                      "hydra.launcher.nproc_per_node=2", *TORCHRUN_NODE, "hydra.launcher.partition=multi", "hydra.launcher.timeout_min=5",
                      f"hydra.launcher.name={unique_name}")
    one, four, under_torchrun = the_run(single), the_run(spread), the_run(torchrun)
    for run in (one, four, under_torchrun):
        assert run["state"] == "COMPLETED", run["error"]
    for run in (four, under_torchrun):
        assert set(run["environment"]["slurm"]["SLURM_JOB_NODELIST"].strip("n[]").split("-")) == {"1", "2"}
        assert run["metrics"]["val_loss"]["last"] == pytest.approx(one["metrics"]["val_loss"]["last"], rel=1e-4)
        assert run["result"] == pytest.approx(one["result"], abs=1e-6)  # val_acc: the same model
    assert under_torchrun["environment"]["slurm"]["SLURM_NTASKS"] == "2"  # one torchrun per node, 2 workers each


def test_torchrun_forwards_the_warning_to_its_workers_which_save_and_requeue(tmp_path: Path, unique_name: str) -> None:
    sweep = launch(tmp_path, *SMALL, "epochs=1000000", "max_minutes=0.3", "hydra.launcher.nodes=2",
                   "hydra.launcher.nproc_per_node=2", *TORCHRUN_NODE, "hydra.launcher.partition=multi", "hydra.launcher.timeout_min=10",
                   f"hydra.launcher.name={unique_name}")
    wait_until(lambda: the_run(sweep)["metrics"].get("loss", {}).get("count", 0) >= 20, timeout_s=180, interval_s=1,
               what="the torchrun job to train")
    job = the_run(sweep)["slurm_job_id"]
    sent = run_command(["scancel", "--signal=USR2", job])  # to the job step (torchrun), not the batch shell
    assert sent.ok, sent.stderr
    run = wait_until(lambda: ended(sweep), timeout_s=240, interval_s=3, what="the signalled torchrun run to end")
    assert run["state"] == "COMPLETED", (run["state"], run["error"], run["executions"])
    first, *later = run["executions"]
    assert (first["state"], first["reason"]) == ("REQUEUED", "SIGNAL"), run["executions"]
    assert later and later[0]["resumed_from"] == first["checkpoint_step"]
    each_step_once(run, "loss")


def test_a_time_limited_run_is_requeued_and_resumed_until_it_has_trained_enough(time_limited: str) -> None:
    run = wait_until(lambda: ended(time_limited), timeout_s=900, interval_s=5, what="the time-limited run to end")
    assert run["state"] == "COMPLETED", (run["state"], run["error"], run["executions"])
    executions = run["executions"]
    assert run["restarts"] >= 2 and len(executions) >= 3, executions
    assert all(e["reason"] == "TIMEOUT" and e["state"] == "REQUEUED" for e in executions[:-1]), executions
    assert executions[-1]["state"] == "COMPLETED"
    for before, after in zip(executions, executions[1:]):
        assert after["resumed_from"] == before["checkpoint_step"]  # each went on where the last one saved
    assert requeue_counts(run)["TIMEOUT"] == len(executions) - 1 <= 8
    assert run["metrics"]["trained_s"]["last"] >= 1.5 * 60
    each_step_once(run, "loss")


def test_a_requeue_slurm_refuses_is_one_line_and_the_checkpoint_stays(not_requeueable: tuple[str, Path]) -> None:
    sweep, folder = not_requeueable
    run = wait_until(lambda: ended(sweep), timeout_s=300, interval_s=5, what="the not-requeueable run to end")
    assert run["state"] == "TIMEOUT", (run["state"], run["error"], run["executions"])
    assert len(run["executions"]) == 1 and run["restarts"] == 0
    (log,) = (folder / "sweep" / ".slurmml" / "logs").glob("*_log.err")
    stderr = log.read_text()
    refusals = [line for line in stderr.splitlines() if "Slurm refused to requeue" in line]
    assert len(refusals) == 1 and "runs on to its limit" in refusals[0], stderr[-2000:]
    assert "Traceback" not in stderr
    saved = sorted((Path(run["run_dir"]) / "checkpoints").glob("step_*.pt"))
    assert saved, "the checkpoint saved at the warning is gone"


@pytest.mark.parametrize("overrides, message", [
    (["hydra.launcher.nodes=3", "hydra.launcher.partition=multi"], "nodes=3 but partition multi has 2 node(s)"),
    (["hydra.launcher.tasks_per_node=20", "hydra.launcher.partition=multi"],
     "20 CPUs per node requested (cpus_per_task x tasks_per_node) but nodes in partition multi have at most 16"),
    (["hydra.launcher.nproc_per_node=2", "hydra.launcher.tasks_per_node=2"], "leave tasks_per_node at 1"),
])
def test_a_job_bigger_than_the_cluster_is_one_line_and_leaves_nothing(tmp_path: Path, overrides: list[str],
                                                                        message: str) -> None:
    result = run_app([TRAIN, "-m", "hydra/launcher=slurmml", f"hydra.sweep.dir={tmp_path}/sweep", *overrides],
                     cwd=tmp_path, timeout=120)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["multirun.yaml"]  # Hydra's own


@pytest.mark.parametrize("framework, metric", [("lightning", "loss"), ("huggingface", "loss")])
def test_lightning_and_hugging_face_runs_requeue_and_resume(tmp_path: Path, unique_name: str, framework: str,
                                                            metric: str) -> None:
    from tests.conftest import copy_app

    app = copy_app("frameworks", tmp_path / "app")
    result = run_app(["frameworks.py", "-m", "hydra/launcher=slurmml", f"framework={framework}",
                      "hydra.launcher.partition=cpu", "hydra.launcher.timeout_min=10", "hydra.launcher.poll_interval_s=5",
                      f"hydra.launcher.name={unique_name}", "hydra.sweep.dir=sweep"], cwd=app, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", result.stderr).group(1)
    wait_until(lambda: the_run(sweep)["metrics"].get(metric, {}).get("count", 0) >= 10, timeout_s=180, interval_s=1,
               what=f"the {framework} run to train")
    sent = run_command(["scancel", "--signal=USR2", "--batch", the_run(sweep)["slurm_job_id"]])  # the task itself
    assert sent.ok, sent.stderr
    run = wait_until(lambda: ended(sweep), timeout_s=240, interval_s=3, what=f"the signalled {framework} run to end")
    assert run["state"] == "COMPLETED", (run["state"], run["error"], run["executions"])
    first, *later = run["executions"]
    assert (first["state"], first["reason"]) == ("REQUEUED", "SIGNAL") and later, run["executions"]
    assert later[-1]["state"] == "COMPLETED" and later[0]["resumed_from"] is not None
    assert run["result"] == 60.0  # every step trained, across the two executions
    summary = run["metrics"][metric]
    with registry() as reg:
        steps = [row[0] for row in reg.conn.execute(
            "SELECT m.step FROM metrics m JOIN runs r USING (run) JOIN metric_keys k USING (key) "
            "WHERE r.id = ? AND k.name = ? ORDER BY m.step", (run["id"], metric))]
    assert steps == sorted(set(steps)) and len(steps) == summary["count"] >= 55, steps  # each step once


def test_a_rank_that_ends_during_the_save_is_one_line_and_the_run_goes_on(tmp_path: Path, unique_name: str) -> None:
    from tests.conftest import copy_app

    app = copy_app("dies", tmp_path / "app")
    result = run_app(["dies.py", "-m", "hydra/launcher=slurmml", "hydra.launcher.tasks_per_node=2",
                      "hydra.launcher.partition=cpu", "hydra.launcher.timeout_min=10", "hydra.launcher.poll_interval_s=5",
                      f"hydra.launcher.name={unique_name}", "hydra.sweep.dir=sweep"], cwd=app, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", result.stderr).group(1)
    wait_until(lambda: the_run(sweep)["metrics"].get("value", {}).get("count", 0) >= 10, timeout_s=180, interval_s=1,
               what="the two-task run to train")
    assert run_command(["scancel", "--signal=USR2", the_run(sweep)["slurm_job_id"]]).ok  # to both tasks
    run = wait_until(lambda: ended(sweep), timeout_s=240, interval_s=3, what="the run to end")
    assert run["state"] == "COMPLETED", (run["state"], run["error"], run["executions"])
    assert [(e["state"], e["reason"]) for e in run["executions"]] == [("REQUEUED", "SIGNAL"), ("COMPLETED", None)]
    logs = "".join(log.read_text() for log in (app / "sweep" / ".slurmml" / "logs").glob("*_log.err"))
    lines = [line for line in logs.splitlines() if "a rank ended while step" in line]
    assert len(lines) == 1 and "requeueing without it" in lines[0], logs[-3000:]
    assert run["result"] == 80.0  # rank 0's state of the step it saved, then the rest of the steps
