"""Hugging Face transformers under slurmml: the Trainer's logs in the run's spool, and a requeue on Slurm's
warning signal.

    from slurmml.integrations.huggingface import SlurmmlCallback, resume_checkpoint

    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[SlurmmlCallback()])
    trainer.train(resume_from_checkpoint=resume_checkpoint(args.output_dir))

docs/integrations.md, "Lightning and Hugging Face", says why it works the way it does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

from slurmml.integrations import missing_framework, numbers_only
from slurmml.tracking import client, requeue

try:
    import transformers
except ModuleNotFoundError as error:
    raise missing_framework(error, "transformers", __name__, "huggingface") from None
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.trainer import TRAINER_STATE_NAME

__all__ = ["SlurmmlCallback", "resume_checkpoint"]


class SlurmmlCallback(transformers.TrainerCallback):
    """The Trainer's arguments, logs and checkpoints in the slurmml run; save and requeue on Slurm's warning.

    Rank 0 (the world's process zero) writes; every rank asks `slurmml.stop_requested()` after each optimizer
    step and calls `requeue_after_save` (both are collectives). When the warning came, the step's end asks the
    Trainer for a save (`should_save`), and once checkpoint-<step> is written, `on_save` requeues the job:
    `Requeued` ends the process with exit code 0. If the job cannot be requeued (not a Slurm job, refused,
    none left) one line says so and training goes on, as with `slurmml.checkpoint_point`: only the save was
    asked for, never `should_training_stop`.
    """

    def __init__(self) -> None:
        self._saving_to_requeue = False

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        requeue.stop_requested(sync=False)  # take Slurm's warning signal from here on
        if not state.is_world_process_zero:
            return
        params: dict[str, Any] = {"training_args": args.to_dict()}  # to_dict hides the hub token
        config = getattr(model, "config", None)
        if callable(getattr(config, "to_dict", None)):
            params["model_config"] = config.to_dict()
        client.log_params(**params)
        if state.global_step > 0:  # resumed: the steps logged after this checkpoint are superseded
            client.record_resume(state.global_step, _checkpoint_folder(args, state))

    def on_log(self, args: Any, state: Any, control: Any, logs: Optional[dict[str, Any]] = None,
               **kwargs: Any) -> None:
        values = numbers_only(logs)
        if values and state.is_world_process_zero:
            client.log(step=state.global_step, **values)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if requeue.stop_requested():
            control.should_save = True
            self._saving_to_requeue = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = _checkpoint_folder(args, state)
        if state.is_world_process_zero:
            client.log_artifact(folder)
        if self._saving_to_requeue:
            self._saving_to_requeue = False
            requeue.requeue_after_save(step=state.global_step, checkpoint=folder)


def resume_checkpoint(output_dir: Union[str, os.PathLike]) -> Optional[str]:
    """For `trainer.train(resume_from_checkpoint=...)`: the newest complete `checkpoint-<step>` folder in
    `output_dir`, else None. Complete means it holds trainer_state.json, which the Trainer writes after the
    weights, optimizer and random states; a folder without it is a save cut short by the time limit."""
    found = []
    for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = path.name[len(PREFIX_CHECKPOINT_DIR) + 1:]
        if step.isdigit() and (path / TRAINER_STATE_NAME).is_file():
            found.append((int(step), str(path)))
    return max(found)[1] if found else None


def _checkpoint_folder(args: Any, state: Any) -> str:
    """Where the Trainer saved the checkpoint of this step (not under a hyperparameter-search trial's folder)."""
    return os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
