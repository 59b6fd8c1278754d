"""Live control and early stopping on the real dev cluster, with examples/train.py.

- `slurmml set` changes the learning rate of a running job: the change is in its `lr` curve from the step the job
  answered, within two read intervals and an epoch; `snapshot` then `stop` leave loadable checkpoints and the run
  STOPPED (Slurm: COMPLETED, exit 0); bad input and a job that never answers get one line each.
- A grid sweep with a hyperband rule prunes the runs the rule says have lost (checked against the rule itself on
  the curves as they were when it decided) and keeps the best one; an Optuna study with the same rule completes,
  its pruned trials told the worst value.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from slurmml.core.early_stop import parse_rule
from slurmml.registry.registry import Registry
from tests.conftest import ROOT, copy_app, ended_runs, run_app, sweep_runs, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

TRAIN = str(ROOT / "examples" / "train.py")
READ_INTERVAL_S = 1.0
FAST = ["n_samples=600", "hydra.launcher.timeout_min=10", "save_model=false"]
RULE = "hydra.launcher.early_stop={metric:val_loss,rule:hyperband,min_steps:2,eta:2,grace_s:20}"


@pytest.fixture(scope="module", autouse=True)
def _read_controls_often():
    """The jobs inherit the submitting environment: they read their control file every second."""
    old = os.environ.get("SLURMML_CONTROL_INTERVAL_S")
    os.environ["SLURMML_CONTROL_INTERVAL_S"] = str(READ_INTERVAL_S)
    yield
    if old is None:
        os.environ.pop("SLURMML_CONTROL_INTERVAL_S", None)
    else:
        os.environ["SLURMML_CONTROL_INTERVAL_S"] = old


def slurmml(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slurmml", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def launch(folder: Path, app: str, *overrides: str, timeout: float = 300) -> tuple[str, subprocess.CompletedProcess]:
    folder.mkdir(parents=True, exist_ok=True)
    result = run_app([app, "-m", "hydra/launcher=slurmml", "hydra.launcher.poll_interval_s=5",
                      f"hydra.sweep.dir={folder}/sweep", *overrides], cwd=folder, timeout=timeout)
    found = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", result.stderr)
    return (found.group(1) if found else ""), result


def registry() -> Registry:
    return Registry(Path(os.environ["SLURMML_HOME"]) / "registry.db", create=False)


def points(run_id: str, metric: str) -> list[tuple[int, float, float]]:
    with registry() as reg:
        reg.ingest_one(run_id)
        return [tuple(row) for row in reg.conn.execute(
            "SELECT m.step, m.value, m.time FROM metrics m JOIN runs r USING (run) JOIN metric_keys k USING (key) "
            "WHERE r.id = ? AND k.name = ? ORDER BY m.step", (run_id, metric))]


def test_set_snapshot_and_stop_a_running_job(tmp_path: Path) -> None:
    sweep, result = launch(tmp_path, TRAIN, "epochs=300", "epoch_s=0.5", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = sweep_runs(sweep)
    run_id = run["id"]
    wait_until(lambda: len(points(run_id, "lr")) >= 3, 180, 1.0, "three epochs")

    changed = slurmml("set", run_id, "optimizer.lr=0.0005", "--timeout", "60")
    assert changed.returncode == 0, changed.stderr
    step = int(re.search(r"applied at step (\d+)", changed.stdout).group(1))
    def two_epochs_later() -> list | None:
        found = points(run_id, "lr")
        return found if found and found[-1][0] > step + 1 else None

    lr = {s: v for s, v, _ in wait_until(two_epochs_later, 60, 1.0, "epochs after the change")}
    assert all(v == pytest.approx(0.01) for s, v in lr.items() if s <= step)  # the curve shows where it took effect
    assert all(v == pytest.approx(0.0005) for s, v in lr.items() if s > step)
    with registry() as reg:
        (entry,) = reg.controls(run_id=run_id)
    assert (entry["what"], entry["shown"], entry["step"], entry["source"]) == (
        "set optimizer.lr=0.0005", "applied", step, "cli")
    times = {s: t for s, _, t in points(run_id, "lr")}
    epoch_s = times[step] - times[step - 1]
    assert entry["answered"] - entry["asked"] <= 2 * READ_INTERVAL_S + epoch_s + 1.0  # two reads, one epoch

    # bad input: one line each, and nothing reaches the job
    for words, expected in ((["optimizer.lr=abc"], "is not a number"), (["lr"], "give at least one KEY=VALUE"),
                            (["dropout=0.3"], "no callback for dropout")):
        refused = slurmml("set", run_id, *words, "--timeout", "60")
        assert refused.returncode == 1 and expected in refused.stderr and "Traceback" not in refused.stderr, refused.stderr

    snap = slurmml("snapshot", run_id, "--timeout", "60")
    assert snap.returncode == 0, snap.stderr
    saved = Path(re.search(r"saved (\S+\.pt)", snap.stdout).group(1))
    stopped = slurmml("stop", run_id, "--timeout", "60")
    assert stopped.returncode == 0, stopped.stderr
    last = Path(re.search(r"saved (\S+\.pt)", stopped.stdout).group(1))

    ended = wait_until(lambda: ended_runs(sweep), 120, 2.0, "the run to end")[0]
    assert ended["state"] == "STOPPED" and ended["exit_code"] == 0, ended
    import torch

    for checkpoint in (saved, last):
        state = torch.load(checkpoint, weights_only=False)
        assert "model" in state["objects"] and "optimizer" in state["objects"], checkpoint
    assert torch.load(last, weights_only=False)["step"] >= torch.load(saved, weights_only=False)["step"]
    late = slurmml("set", run_id, "optimizer.lr=0.1")
    assert late.returncode == 1 and "has already ended (STOPPED)" in late.stderr


def test_a_job_that_never_answers_times_out(tmp_path: Path) -> None:
    app = copy_app("tiny", tmp_path / "app") / "tiny.py"
    sweep, result = launch(tmp_path, str(app), "sleep_s=40")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = sweep_runs(sweep)
    wait_until(lambda: sweep_runs(sweep)[0]["state"] == "RUNNING" or None, 120, 1.0, "the job to start")
    quiet = slurmml("snapshot", run["id"], "--timeout", "4")
    assert quiet.returncode == 1 and "no answer to snapshot within 4 s" in quiet.stderr, quiet.stderr
    wait_until(lambda: ended_runs(sweep), 180, 2.0, "the run to end")
    with registry() as reg:
        (entry,) = reg.controls(run_id=run["id"])
    assert entry["shown"] == "expired"  # it ended without reading it


def pruned_as_the_rule_says(sweep: str, rule_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Each pruned run's recorded decision agrees with the curves: its value is its own value at the rung it was
    judged at, strictly worse than the cut, and the cut is the value some run logged at that rung. (The curves as
    the watcher saw them are not kept: points reach the registry a moment after the job logged them.)"""
    rule = parse_rule(rule_spec)
    with registry() as reg:
        prunings = reg.prunings(sweep)
        values = {row["run_id"]: [p[1] for p in row["points"]] for row in reg.sweep_curves(sweep, rule.metric)}
    for pruning in prunings:
        rung = pruning["rung"]
        assert values[pruning["run_id"]][rung - 1] == pytest.approx(pruning["value"]), pruning
        worse = pruning["value"] > pruning["threshold"] if rule.mode == "min" else pruning["value"] < pruning["threshold"]
        assert worse, pruning
        at_rung = [curve[rung - 1] for curve in values.values() if len(curve) >= rung]
        assert any(v == pytest.approx(pruning["threshold"]) for v in at_rung) and pruning["compared"] <= len(at_rung)
    return prunings


def test_grid_sweep_with_hyperband_prunes_losers_and_keeps_the_best(tmp_path: Path) -> None:
    sweep, result = launch(tmp_path, TRAIN, "model=mlp,linear", "optimizer.lr=0.03,0.003,0.0001",
                           "epochs=12", "epoch_s=1", *FAST, RULE, "hydra.launcher.wait=true", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sweep_runs(sweep)
    prunings = pruned_as_the_rule_says(sweep, {"metric": "val_loss", "rule": "hyperband", "min_steps": 2, "eta": 2})
    pruned = {p["run_id"] for p in prunings}
    assert pruned, "the rule pruned nothing"
    states = {r["id"]: r["state"] for r in runs}
    assert all(states[run_id] == "PRUNED" for run_id in pruned), states
    assert all(r["state"] == "COMPLETED" for r in runs if r["id"] not in pruned), states
    final = {r["id"]: r["metrics"]["val_loss"]["last"] for r in runs}
    best = min((run_id for run_id in final if run_id not in pruned), key=final.get)
    assert all(final[best] < final[run_id] for run_id in pruned)
    assert all(r["metrics"]["val_loss"]["last_step"] < 12 for r in runs if r["id"] in pruned)
    for r in runs:
        if r["id"] in pruned:
            assert re.search(r"val_loss .* \(rung \d+\) is worse than", r["error"] or ""), r["error"]

    saved = json.loads(slurmml("report", "--sweep", sweep, "--json").stdout)
    (early,) = saved["early_stop"]
    assert early["pruned"] == len(pruned) and early["best_survived"] is True and early["gpu_hours_saved"] >= 0
    nobody = slurmml("prune", sweep, "--metric", "val_los")
    assert nobody.returncode == 1 and "no run logs 'val_los'" in nobody.stderr, nobody.stderr


def test_optuna_study_with_the_same_rule(tmp_path: Path) -> None:
    sweeper = ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=3",
               "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler.seed=1",
               "optimizer.lr=interval(0.0001,0.05)", "model=choice(mlp,linear)"]
    sweep, result = launch(tmp_path, TRAIN, *sweeper, "epochs=10", "epoch_s=1", *FAST, RULE,
                           "hydra.launcher.wait=true", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sweep_runs(sweep)
    assert len(runs) == 6
    study = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    completed = [r for r in runs if r["state"] == "COMPLETED"]
    assert completed and study["best_value"] == pytest.approx(max(r["result"] for r in completed))
    pruned_as_the_rule_says(sweep, {"metric": "val_loss", "rule": "hyperband", "min_steps": 2, "eta": 2})
    assert all(r["state"] in ("COMPLETED", "PRUNED") for r in runs), [r["state"] for r in runs]

    # a mode that contradicts the sweeper's direction is refused before anything is queued
    before = len(registry().runs())
    sweep, refused = launch(tmp_path / "bad", TRAIN, *sweeper, *FAST,
                            "hydra.launcher.early_stop={metric:result,mode:min}")
    assert refused.returncode != 0 and "contradicts the sweeper's direction" in refused.stderr, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr and len(registry().runs()) == before
