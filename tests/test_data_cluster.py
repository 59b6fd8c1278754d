"""Data on the real dev cluster and a real S3 server on 127.0.0.1.

- The story end to end: a run on a "workstation" (its own SLURMML_HOME, a plain `python train.py` of the example
  app in a git checkout) reads dataset v1 and ships itself through S3; the "login node" syncs it, registers v2,
  clones the run with v2 and another learning rate on Slurm; both runs show with their lineage and in the
  per-dataset leaderboard.
- 16 array tasks on one node materialize one version once, into node-local disk, and upload their artifacts
  from the job.
- With the store unreachable from the jobs, the launcher stages the declared version first, the tasks read it
  from the shared cache, and their artifacts are uploaded from the login node by `slurmml sync`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmml.cli import main
from slurmml.registry.registry import Registry
from tests.conftest import ROOT, copy_app, ended_runs, run_app, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, f"slurmml {' '.join(args)}:\n{result.output}"
    return result.output


def registry() -> Registry:
    return Registry(Path(os.environ["SLURMML_HOME"]) / "registry.db", create=False)


def spiral_folder(folder: Path, noise: float) -> Path:
    subprocess.run([sys.executable, "make_dataset.py", str(folder), "--noise", str(noise), "--samples", "600"],
                   cwd=ROOT / "examples", check=True, capture_output=True)
    return folder


def test_workstation_run_synced_then_cloned_on_the_cluster_with_the_next_version(tmp_path: Path, s3_store) -> None:
    # the workstation: the example app in a git checkout, its own slurmml home
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "examples", checkout, ignore=shutil.ignore_patterns("multirun", "outputs", "__pycache__"))
    for command in (["init", "-q"], ["add", "."], ["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x"]):
        subprocess.run(["git", *command], cwd=checkout, check=True)
    workstation = dict(os.environ, SLURMML_HOME=str(tmp_path / "workstation"))
    added = subprocess.run([sys.executable, "-m", "slurmml", "dataset", "add", "spiral",
                            str(spiral_folder(tmp_path / "v1", 0.3))], env=workstation, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    trained = run_app(["train.py", "epochs=3", "dataset=spiral@v1", f"hydra.run.dir={tmp_path / 'ws-out'}"],
                      cwd=checkout, env=workstation)
    assert trained.returncode == 0, trained.stderr
    (local_id,) = [p.name for p in (tmp_path / "workstation" / "runs").iterdir()]

    # the login node: the next version, the synced run, its clone on Slurm
    cli("dataset", "add", "spiral", str(spiral_folder(tmp_path / "v2", 0.5)))
    cli("sync")
    with registry() as reg:
        parent = reg.run(local_id)
    assert parent["state"] == "COMPLETED"
    assert [(i["dataset"], i["version"]) for i in parent["inputs"]] == [("spiral", 1)]
    assert parent["metrics"]["val_acc"]["count"] == 3
    assert parent["config"]["dataset"] == "spiral@v1"

    cloned = cli("clone", local_id, "spiral@v2", "optimizer.lr=0.003", "hydra.launcher.partition=cpu",
                 "hydra.launcher.timeout_min=5")
    clone_id = re.search(r"as (\S+) \(job", cloned).group(1)

    def clone_ended():
        with registry() as reg:
            reg.refresh()
            run = reg.run(clone_id)
        return run if run["state"] in ("COMPLETED", "FAILED", "LOST", "CANCELLED", "TIMEOUT") else None

    child = wait_until(clone_ended, timeout_s=240, interval_s=3, what="the clone to end")
    assert child["state"] == "COMPLETED", (child["error"], Path(child["log_path"]).read_text()[-2000:])
    assert child["parent_id"] == local_id
    assert [(i["dataset"], i["version"]) for i in child["inputs"]] == [("spiral", 2)]
    assert child["config"]["optimizer"]["lr"] == 0.003 and child["config"]["dataset"] == "spiral@v2"
    assert child["metrics"]["val_acc"]["count"] == 3

    lineage = json.loads(cli("lineage", clone_id, "--json"))
    assert lineage["parent"]["id"] == local_id and lineage["parent"]["inputs"][0]["version"] == 1
    assert [i["version"] for i in lineage["inputs"]] == [2]
    users = json.loads(cli("lineage", "spiral", "--json"))
    assert [(u["id"], u["version"]) for u in users] == [(local_id, 1), (clone_id, 2)]
    board = json.loads(cli("leaderboard", "val_acc", "--by-dataset", "--json"))
    groups = {row["group"]: row["id"] for row in board if row["id"] in (local_id, clone_id)}
    assert groups == {"spiral@v1": local_id, "spiral@v2": clone_id}


def tiny_dataset(folder: Path, files: int = 40) -> Path:
    for index in range(files):
        path = folder / f"part-{index // 10}" / f"{index}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {index}\n" * (index + 1))
    return folder


def test_sixteen_tasks_on_one_node_download_once_and_upload_their_artifacts(tmp_path: Path, s3_store,
                                                                            unique_name: str) -> None:
    cli("dataset", "add", "tiny", str(tiny_dataset(tmp_path / "tiny")))
    app = copy_app("data", tmp_path / "app")
    node_tmp = tmp_path / "node-tmp"
    result = run_app(["data.py", "-m", "hydra/launcher=slurmml", "x=range(16)", "dataset=tiny@latest",
                      "node_local=true", f"node_tmp={node_tmp}", "hydra.launcher.partition=cpu",
                      "hydra.launcher.wait=true", "hydra.launcher.poll_interval_s=5",
                      f"hydra.launcher.name={unique_name}", "hydra.sweep.dir=sweep"], cwd=app)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", result.stderr).group(1)
    runs = ended_runs(sweep)
    assert [r["state"] for r in runs] == ["COMPLETED"] * 16, [(r["state"], r["error"]) for r in runs]
    with registry() as reg:
        details = [reg.run(r["id"]) for r in runs]
    assert all(len(d["inputs"]) == 1 and d["inputs"][0]["version"] == 1 for d in details)
    assert sum(d["inputs"][0]["fetched"] for d in details) == 1  # one download on the node, 15 cache hits
    assert {d["result"] for d in details} == {details[0]["result"]} and details[0]["result"] > 0
    for detail in details:
        (artifact,) = detail["artifacts"]
        assert artifact["upload"] == "uploaded" and artifact["uri"].startswith("s3://"), artifact
    got = cli("artifacts", "get", runs[3]["id"], "out.txt", str(tmp_path / "got.txt"))
    assert (tmp_path / "got.txt").read_text() == "task 3 read %d bytes\n" % details[0]["result"], got


def test_unreachable_store_staged_dataset_and_artifacts_uploaded_from_the_login_node(tmp_path: Path, s3_store,
                                                                                      unique_name: str) -> None:
    cli("dataset", "add", "tiny", str(tiny_dataset(tmp_path / "tiny", files=12)))
    app = copy_app("data", tmp_path / "app")
    cache = tmp_path / "shared-cache"
    result = run_app(["data.py", "-m", "hydra/launcher=slurmml", "x=0,1", "dataset=tiny@latest",
                      "hydra.launcher.partition=cpu", "hydra.launcher.datasets=[tiny@latest]",
                      # the compute nodes cannot reach the store: only the login node can
                      'hydra.launcher.setup=["export SLURMML_S3_ENDPOINT=http://127.0.0.1:9"]',
                      "hydra.launcher.wait=true", "hydra.launcher.poll_interval_s=5",
                      f"hydra.launcher.name={unique_name}", "hydra.sweep.dir=sweep"], cwd=app,
                     env=dict(os.environ, SLURMML_DATA_CACHE=str(cache)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "staged dataset tiny@v1" in result.stderr
    sweep = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", result.stderr).group(1)
    runs = ended_runs(sweep)
    assert [r["state"] for r in runs] == ["COMPLETED"] * 2, [(r["state"], r["error"]) for r in runs]
    with registry() as reg:
        details = [reg.run(r["id"]) for r in runs]
    assert [d["inputs"][0]["fetched"] for d in details] == [0, 0]  # both read what the launcher staged
    assert [d["artifacts"][0]["upload"] for d in details] == ["pending", "pending"]

    cli("sync")
    with registry() as reg:
        details = [reg.run(r["id"]) for r in runs]
    assert [d["artifacts"][0]["upload"] for d in details] == ["uploaded", "uploaded"]
    listed = json.loads(cli("artifacts", runs[1]["id"], "--json"))
    assert listed[0]["name"] == "out.txt" and listed[0]["uri"].startswith("s3://")
