"""A task's return value becomes its run's result, and the sweeper's declared direction ranks it: real Hydra sweeps
on this machine (hydra/launcher=slurmml_local), read back through the `slurmml` command. No cluster needed.

The sweeper is Hydra's basic one, declaring `direction` the way the Optuna sweeper's config does
(tests/apps/hydra_plugins/declaring_sweeper.py): the launcher reads `hydra.sweeper.direction` from the config.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, copy_app, run_app

SWEEPER = "hydra.sweeper._target_=hydra_plugins.declaring_sweeper.DeclaringSweeper"


def launch(app: Path, direction: str, *overrides: str) -> str:
    result = run_app(["objective.py", "-m", "hydra/launcher=slurmml_local", f"hydra.sweep.dir=out-{direction}",
                      SWEEPER, f"+hydra.sweeper.direction={direction}", *overrides], cwd=app)
    assert result.returncode == 0, result.stderr[-3000:]
    return re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", result.stderr).group(1)


def slurmml(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "slurmml", *args], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_return_values_are_recorded_shown_and_ranked_the_declared_way(tmp_path: Path) -> None:
    app = copy_app("objective", tmp_path / "app")
    shutil.copytree(ROOT / "tests" / "apps" / "hydra_plugins", app / "hydra_plugins")
    maximizing = launch(app, "maximize", "x=0,2", "returns=int,numpy,dict")

    runs = json.loads(slurmml("runs", "--sweep", maximizing, "--json"))
    assert {r["overrides"]: r["result"] for r in runs} == {
        "x=0 returns=int": 4.0, "x=0 returns=numpy": 4.0, "x=0 returns=dict": None,  # a dict is no result
        "x=2 returns=int": 0.0, "x=2 returns=numpy": 0.0, "x=2 returns=dict": None}
    below = json.loads(slurmml("runs", "--sweep", maximizing, "--where", "result<1", "--json"))
    assert sorted(r["overrides"] for r in below) == ["x=2 returns=int", "x=2 returns=numpy"]
    ordered = json.loads(slurmml("runs", "--sweep", maximizing, "--sort", "result", "--json"))
    assert [r["result"] for r in ordered] == [4.0, 4.0, 0.0, 0.0, None, None]  # maximized: the largest first

    report = json.loads(slurmml("report", "--sweep", maximizing, "--json"))
    assert (report["metric"], report["mode"]) == ("result", "max")
    assert [b["value"] for b in report["best"]] == [4.0, 4.0, 0.0, 0.0]

    shown = slurmml("show", f"{maximizing}-0")
    assert re.search(r"result\s*:?\s+4", shown), shown
    assert "batch_size" in shown and "optimizer.name" in shown and "sgd" in shown  # what log_params was given
    assert json.loads(slurmml("show", f"{maximizing}-0", "--json"))["params"] == {"batch_size": 32,
                                                                                 "optimizer.name": "sgd", "x": 0}

    minimizing = launch(app, "minimize", "x=0,1,2")  # an Optuna-style `direction: minimize` study
    report = json.loads(slurmml("report", "--sweep", minimizing, "--json"))
    assert (report["metric"], report["mode"]) == ("result", "min")
    assert [(b["overrides"], b["value"]) for b in report["best"]] == [(["x=2"], 0.0), (["x=1"], 1.0), (["x=0"], 4.0)]
    by_loss = json.loads(slurmml("report", "--sweep", minimizing, "--metric", "val_loss", "--json"))
    assert by_loss["mode"] == "min" and by_loss["best"][0]["overrides"] == ["x=2"]
