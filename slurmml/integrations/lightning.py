"""PyTorch Lightning under slurmml: its logs in the run's spool, and a requeue on Slurm's warning signal.

    from slurmml.integrations.lightning import SlurmmlLogger, SlurmmlRequeue, plugins, resume_checkpoint

    trainer = lightning.Trainer(logger=SlurmmlLogger(), callbacks=[SlurmmlRequeue()], plugins=plugins())
    trainer.fit(model, data, ckpt_path=resume_checkpoint())

For the `lightning` package (`lightning.pytorch`), 2.2 or later. docs/integrations.md, "Lightning and
Hugging Face", says why it works the way it does.
"""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path
from typing import Any, Optional, Union

from slurmml.integrations import missing_framework, numbers_only, run_folder
from slurmml.tracking import client, requeue
from slurmml.tracking.checkpoint import FOLDER

try:
    import lightning.pytorch as pl
except ModuleNotFoundError as error:
    raise missing_framework(error, "lightning", __name__, "lightning") from None
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

REQUEUE_CHECKPOINT = "lightning-requeue.ckpt"  # in <run dir>/checkpoints, overwritten by each requeue

__all__ = ["SlurmmlLogger", "SlurmmlRequeue", "plugins", "resume_checkpoint", "REQUEUE_CHECKPOINT"]


class SlurmmlLogger(Logger):
    """Lightning's metrics, hyperparameters and saved checkpoints, recorded in the slurmml run.

    Only rank 0 writes (a run's spool has one writer). `name` and `version` are empty on purpose: Lightning's
    ModelCheckpoint saves into `save_dir/name/version/checkpoints`, so its files land in
    `<run dir>/checkpoints`, next to slurmml's own and where `resume_checkpoint` looks; the run's id is `run_id`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._recorded: dict[str, float] = {}  # checkpoint file -> the mtime already recorded

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @property
    def run_id(self) -> str:
        return client.run.id

    @property
    def save_dir(self) -> Optional[str]:
        folder = run_folder()
        return str(folder) if folder is not None else None

    @property
    def root_dir(self) -> Optional[str]:
        return self.save_dir

    @property
    def log_dir(self) -> Optional[str]:
        return self.save_dir

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        values = numbers_only(metrics)
        if values:
            client.log(step=step, **values)

    @rank_zero_only
    def log_hyperparams(self, params: Union[dict[str, Any], Namespace], *args: Any, **kwargs: Any) -> None:
        params = vars(params) if isinstance(params, Namespace) else dict(params or {})
        client.log_params(**{str(key): value for key, value in params.items()})  # slurmml masks secrets

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        for attribute in ("best_model_path", "last_model_path"):
            path = Path(getattr(checkpoint_callback, attribute, "") or "")
            try:
                mtime = path.stat().st_mtime if path.name else None
            except OSError:
                continue
            if mtime is not None and self._recorded.get(str(path)) != mtime:
                self._recorded[str(path)] = mtime
                client.log_artifact(path)

    def finalize(self, status: str) -> None:
        """Nothing: the run's end is the job wrapper's (or the interpreter's) to record. Lightning says
        "failed" here for any exception, slurmml's Requeued included."""


class SlurmmlRequeue(pl.Callback):
    """Save and requeue when Slurm's warning signal (time limit near, preemption) came.

    After each training batch every rank asks `slurmml.stop_requested()` (all get the same answer). When it
    says yes, the trainer saves `<run dir>/checkpoints/lightning-requeue.ckpt` there, where Lightning's own
    mid-epoch saves happen, and `requeue_after_save` runs at the next hook (the next batch's start,
    validation's start, the next epoch's start or training's end): Lightning logs a batch's metrics after
    its batch-end hooks, and the checkpoint covers them. Requeued is raised from inside that hook. Lightning
    handles any BaseException from a hook alike (trainer/call.py): on_exception hooks, loggers finalized,
    teardown (its signal handlers put back), then the exception goes on out of `fit`, so the process ends with
    exit code 0 and no traceback. Stopping through `trainer.should_stop` instead would run the epoch's end
    first (validation, ModelCheckpoint), using up the warning, and is ignored before min_epochs/min_steps.
    If the job cannot be requeued (not a Slurm job, refused, none left) one line says so and training goes
    on, as with `slurmml.checkpoint_point`.
    """

    def __init__(self) -> None:
        self._saved: Optional[tuple[int, str]] = None  # (global step, checkpoint) waiting for its requeue

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        _switch_off_lightning_requeue(trainer)
        # Take the signal now: Lightning saves the handlers it finds before training and puts them back after
        # fit; a handler installed later (at the first batch) would be undone then.
        requeue.stop_requested(sync=False)

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.ckpt_path and trainer.is_global_zero:
            # The points an earlier execution logged after this checkpoint are superseded (docs/architecture.md).
            # Lightning logs a batch at the count of optimizer steps before it (0 for the first), so a checkpoint
            # of global_step G covers the points up to G - 1 (one optimizer: with several, G counts each).
            client.record_resume(trainer.global_step - 1, str(trainer.ckpt_path))

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not requeue.stop_requested():
            return
        folder = run_folder() if trainer.is_global_zero else None
        path = trainer.strategy.broadcast(str(folder / FOLDER / REQUEUE_CHECKPOINT) if folder else None)
        trainer.save_checkpoint(path)  # every rank: sharded strategies write from each
        self._saved = (trainer.global_step, path)

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        self._requeue_if_saved()

    def on_validation_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._requeue_if_saved()

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._requeue_if_saved()

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._requeue_if_saved()  # even now: else slurmml's watchdog would requeue without a save

    def _requeue_if_saved(self) -> None:
        if self._saved is not None:
            (step, path), self._saved = self._saved, None
            requeue.requeue_after_save(step=step, checkpoint=path)


def plugins() -> list[Any]:
    """`Trainer(plugins=plugins())`: inside a Slurm job, Lightning's SLURM environment with its auto-requeue
    off. Lightning's own requeue (a SIGUSR1 handler that saves hpc_ckpt_<n>.ckpt and runs `scontrol requeue`)
    would act behind slurmml's back; slurmml requeues on SIGUSR2. Outside Slurm, nothing to pass."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def resume_checkpoint(default: Optional[str] = None) -> Optional[str]:
    """For `trainer.fit(..., ckpt_path=resume_checkpoint())`: the newest (by modification time) of the requeue
    checkpoint and Lightning's `last*.ckpt` files in the run's folder, else `default`. The newest, not the
    requeue checkpoint first: after a resume, a later last.ckpt holds more training than the old requeue save."""
    folder = Path(client.run.dir)
    found = []
    for path in [folder / FOLDER / REQUEUE_CHECKPOINT, *folder.rglob("last*.ckpt")]:
        try:
            found.append((path.stat().st_mtime, str(path)))
        except OSError:
            continue
    return max(found)[1] if found else default


def _switch_off_lightning_requeue(trainer: "pl.Trainer") -> None:
    """The safety net for a Trainer built without `plugins()`: the setup hook runs before Lightning registers
    its signal handlers, which read this same object (trainer/connectors/signal_connector.py)."""
    environment = getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
    if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
        environment.auto_requeue = False
        if trainer.is_global_zero:
            print("slurmml: switched off Lightning's SLURM auto-requeue (slurmml requeues on SIGUSR2); "
                  "pass Trainer(plugins=slurmml.integrations.lightning.plugins()) to say so", file=sys.stderr,
                  flush=True)
