"""slurmml.integrations.lightning with the real Lightning, on a tiny CPU model.

Each training runs in a Python process of its own (signal handlers, Lightning's state and slurmml's current run
belong to a process), as a plain script outside Slurm: its run is a local run under $SLURMML_HOME/runs, whose
spool the test reads back. The real requeue needs a Slurm job; here slurmml says "not a Slurm job" and
training goes on. tests/test_longjobs_cluster.py requeues and resumes a Lightning run on the dev cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOT_A_SLURM_JOB = "slurmml: not a Slurm job: nothing to requeue"
# What srun gives a task, without SLURM_JOB_ID: Lightning sees a Slurm task (and turns its auto-requeue on),
# slurmml sees no job to requeue.
LIGHTNING_SEES_SLURM = {"SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
                        "SLURM_JOB_NAME": "train"}

SCRIPT = textwrap.dedent('''
    import os, signal
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from slurmml.integrations.lightning import SlurmmlLogger, SlurmmlRequeue, plugins, resume_checkpoint

    SIGNAL_AT = int(os.environ.get("SIGNAL_AT", "-1"))
    SIGNAL = getattr(signal, "SIG" + os.environ.get("SIGNAL", "USR2"))
    CHECKPOINTS = os.environ.get("CHECKPOINTS", "1") == "1"

    class Tiny(pl.LightningModule):
        def __init__(self, lr=0.1, hidden=4):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    class Signal(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            print("USR1 handler is the default:", signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL, flush=True)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == SIGNAL_AT:
                signal.raise_signal(SIGNAL)  # handled before this call returns, as a signal from Slurm would be

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 2), torch.randn(16, 1)), batch_size=2)  # 8 steps an epoch
    callbacks = [Signal()] + ([SlurmmlRequeue()] if os.environ.get("REQUEUE", "1") == "1" else [])
    callbacks += [ModelCheckpoint(save_last=True)] if CHECKPOINTS else []
    trainer = pl.Trainer(
        max_epochs=1, logger=SlurmmlLogger(), callbacks=callbacks, enable_checkpointing=CHECKPOINTS,
        plugins=plugins() if os.environ.get("PLUGINS", "1") == "1" else None, log_every_n_steps=1,
        accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Tiny(), data, ckpt_path=resume_checkpoint())
    print("steps:", trainer.global_step)
    print("resume from:", resume_checkpoint())
''')


def train(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SLURMML_"))}
    environ.update(SLURMML_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **env)
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=environ, capture_output=True, text=True,
                          timeout=120)


def local_run(tmp_path: Path) -> Path:
    (run,) = (tmp_path / "home" / "runs").glob("local-*")
    return run


def records(spool: Path) -> list[dict]:
    return [json.loads(line) for line in spool.read_text().splitlines()]


def metric_steps(spool_records: list[dict], name: str) -> list[int]:
    return [r["s"] for r in spool_records if r["k"] == "m" and name in r["v"]]


def line(output: str, prefix: str) -> str:
    (found,) = [text for text in output.splitlines() if text.startswith(prefix)]
    return found[len(prefix):].strip()


def test_logger_records_hyperparameters_metrics_and_checkpoints(tmp_path: Path) -> None:
    done = train(tmp_path)
    assert done.returncode == 0, done.stderr
    run = local_run(tmp_path)
    spool = records(run / "spool.jsonl")
    assert [r["v"] for r in spool if r["k"] == "p"] == [{"lr": 0.1, "hidden": 4}]
    assert metric_steps(spool, "train/loss") == list(range(8))  # Lightning: a batch at the count stepped before it
    artifacts = {r["name"]: Path(r["path"]) for r in spool if r["k"] == "a"}
    assert artifacts == {"epoch=0-step=8.ckpt": run / "checkpoints" / "epoch=0-step=8.ckpt",
                         "last.ckpt": run / "checkpoints" / "last.ckpt"}  # ModelCheckpoint saves in the run's folder
    assert all(r["size"] > 0 for r in spool if r["k"] == "a")
    assert line(done.stdout, "resume from:") == str(run / "checkpoints" / "last.ckpt")
    assert [r["state"] for r in spool if r["k"] == "end"] == ["COMPLETED"]


def test_warning_signal_saves_at_its_step_and_training_goes_on_outside_slurm(tmp_path: Path) -> None:
    import torch

    done = train(tmp_path, SIGNAL_AT="3", **LIGHTNING_SEES_SLURM)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count(NOT_A_SLURM_JOB) == 1
    assert "switched off Lightning's SLURM auto-requeue" not in done.stderr  # plugins() did it
    assert line(done.stdout, "USR1 handler is the default:") == "True"
    assert line(done.stdout, "steps:") == "8"  # not requeued: trained on to the end
    saved = local_run(tmp_path) / "checkpoints" / "lightning-requeue.ckpt"
    assert torch.load(saved, weights_only=False)["global_step"] == 3  # the step at whose end the signal came
    spool = records(local_run(tmp_path) / "spool.jsonl")
    assert not [r for r in spool if r["k"] in ("requeue", "requeue_refused")]
    assert metric_steps(spool, "train/loss") == list(range(8))


@pytest.mark.parametrize("requeue_callback, usr1_default", [(True, "True"), (False, "False")])
def test_lightnings_own_requeue_is_off_with_slurmml_requeue_even_without_plugins(
        tmp_path: Path, requeue_callback: bool, usr1_default: str) -> None:
    """Without plugins(), SlurmmlRequeue switches Lightning's auto-requeue off itself, saying so; without either,
    Lightning takes SIGUSR1 (the case the other test rules out)."""
    done = train(tmp_path, PLUGINS="0", REQUEUE="1" if requeue_callback else "0", **LIGHTNING_SEES_SLURM)
    assert done.returncode == 0, done.stderr
    assert line(done.stdout, "USR1 handler is the default:") == usr1_default
    assert ("slurmml: switched off Lightning's SLURM auto-requeue" in done.stderr) == requeue_callback


def test_next_execution_resumes_from_the_requeue_checkpoint(tmp_path: Path) -> None:
    """Two executions of one run, as the job wrapper starts them (same spool, run id and folder): the second
    continues from the checkpoint the warning signal saved, and says so in a `resume` record."""
    run = tmp_path / "run"
    run.mkdir()
    same_run = {"SLURMML_SPOOL": str(run / "spool.jsonl"), "SLURMML_RUN_ID": "s1_0", "SLURMML_RUN_DIR": str(run)}
    first = train(tmp_path, SIGNAL_AT="3", CHECKPOINTS="0", **same_run)
    assert first.returncode == 0, first.stderr
    assert line(first.stdout, "resume from:") == str(run / "checkpoints" / "lightning-requeue.ckpt")
    second = train(tmp_path, CHECKPOINTS="0", **same_run)
    assert second.returncode == 0, second.stderr
    spool = records(run / "spool.jsonl")
    (resume,) = [r for r in spool if r["k"] == "resume"]
    assert resume["checkpoint"] == str(run / "checkpoints" / "lightning-requeue.ckpt")
    assert resume["step"] == 2  # the last point the checkpoint covers: the registry supersedes the later ones
    after = spool[spool.index(resume):]
    assert metric_steps(after, "train/loss") == [3, 4, 5, 6, 7]


def test_sigterm_still_ends_the_process_by_the_signal(tmp_path: Path) -> None:
    """Lightning alone turns SIGTERM into SystemExit with exit code 0 at the next batch, which would read as a
    completed run; slurmml's spool writer takes TERM too, flushes and dies of it (Lightning calls both)."""
    done = train(tmp_path, SIGNAL_AT="3", SIGNAL="TERM")
    assert done.returncode == -15, done.stderr
    assert "steps:" not in done.stdout


def test_resume_checkpoint_takes_the_newest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slurmml.integrations import lightning
    from slurmml.tracking import client

    run = tmp_path / "run"
    monkeypatch.setenv("SLURMML_RUN_ID", "s1_0")
    monkeypatch.setenv("SLURMML_RUN_DIR", str(run))  # a job's rank that is not 0: knows its run, writes nothing
    monkeypatch.delenv("SLURMML_SPOOL", raising=False)
    client._reset()
    try:
        assert lightning.resume_checkpoint() is None
        assert lightning.resume_checkpoint(default="init.ckpt") == "init.ckpt"
        files = {name: run / name for name in ("checkpoints/lightning-requeue.ckpt", "checkpoints/last.ckpt",
                                               "sub/checkpoints/last-v1.ckpt", "checkpoints/epoch=0-step=9.ckpt")}
        for when, path in enumerate(files.values()):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
            os.utime(path, (1000 + when, 1000 + when))
        # the newest of the requeue checkpoint and the last*.ckpt files; other checkpoints are not for resuming
        assert lightning.resume_checkpoint() == str(files["sub/checkpoints/last-v1.ckpt"])
        os.utime(files["checkpoints/lightning-requeue.ckpt"], (2000, 2000))
        assert lightning.resume_checkpoint() == str(files["checkpoints/lightning-requeue.ckpt"])
    finally:
        client._reset()


@pytest.mark.filterwarnings("ignore:The `srun` command is available")  # the unit tests' stub srun is on PATH
def test_plugins_outside_slurm_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    from slurmml.integrations import lightning

    for name in list(os.environ):
        if name.startswith("SLURM_"):
            monkeypatch.delenv(name)
    assert lightning.plugins() == []
    for name, value in LIGHTNING_SEES_SLURM.items():
        monkeypatch.setenv(name, value)
    (environment,) = lightning.plugins()
    assert type(environment).__name__ == "SLURMEnvironment" and environment.auto_requeue is False


def test_importing_slurmml_and_its_integrations_imports_no_framework() -> None:
    code = "import slurmml, slurmml.integrations, sys; print(' '.join(sys.modules))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert "slurmml.integrations" in loaded
    assert {m.split(".")[0] for m in loaded} & {"lightning", "pytorch_lightning", "transformers", "torch"} == set()


def test_missing_lightning_is_one_line_naming_the_extra() -> None:
    code = "import sys; sys.modules['lightning'] = None; import slurmml.integrations.lightning"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == ("ImportError: slurmml.integrations.lightning needs lightning, which is "
                                            "not installed: pip install \"slurmml[lightning]\"")
