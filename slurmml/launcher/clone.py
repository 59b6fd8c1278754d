"""Clone a run: the same code and config as a run of a sweep, plus a change, as a new run of that sweep.

The parent's staged payload (its pickled task function, Hydra context and config) is reused, so the clone
runs the code the sweep was launched with, not whatever the checkout holds now. The new overrides are
checked by composing the config exactly as the task will (task.py) before anything is recorded, staged
or submitted: a bad override is one line and changes nothing. Then the clone is launched as a one-run
batch of the parent's sweep through the sweep's own pipeline (pipeline.launch_batch): recorded (with its
parent_id) before it is submitted, and forgotten again if sbatch refuses it.

User code is unpickled here, so only in a process of its own: `slurmml clone`, or this module's main,
which slurmml.control.actions.clone_run starts for the TUI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from slurmml.errors import SlurmmlError
from slurmml.launcher import batch
from slurmml.launcher.local_backend import start_detached
from slurmml.launcher.pipeline import BatchTarget, launch_batch
from slurmml.launcher.overrides import (Cloned, dataset_changes, launcher_overrides, merge_overrides, override_values,
                                        unmask_overrides)
from slurmml.launcher.recording import JobNumberTaken, record_runs

if TYPE_CHECKING:
    from slurmml.control.actions import ActionResult

RECORD_TRIES = 5  # two clones into one sweep at once may pick the same job number: the second takes the next


def one_line(text: str) -> str:
    """Hydra's multi-line composition errors in one line (the config search path it appends is left out)."""
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Config search path"):
            break
        if line and not line.startswith("See https://hydra.cc"):
            lines.append(line)
    joined = ""
    for line in lines:
        joined += line if not joined else (" " if joined[-1] in ".:!?" else "; ") + line
    return joined


# -- side effects ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """Compose and submit from the sweep's working directory, as the launch did: relative sweep and log
    folders (hydra.sweep.dir=out) mean the same, and the job starts there (sbatch's cwd). Clones and
    resubmissions."""
    before = os.getcwd()
    try:
        os.chdir(path)
    except OSError as error:
        raise SlurmmlError(f"cannot enter the sweep's working directory {path}: {error.strerror}") from None
    try:
        yield
    finally:
        os.chdir(before)


def load_parent_payload(parent: dict) -> tuple[batch.Payload, int]:
    """The parent's staged payload and its index in that batch, from its spool path
    (`<batch dir>/spool/<index>.jsonl`)."""
    spool = Path(parent["spool_path"])
    batch_dir, index = spool.parent.parent, int(spool.stem)
    payload = batch.load_staged_payload(batch_dir, batch.import_path(parent.get("argv"), parent.get("cwd")),
                                        f"run {parent['id']}'s", "it cannot be cloned")
    if not 0 <= index < len(payload.overrides):
        raise SlurmmlError(f"run {parent['id']}: task {index} is not in its payload ({len(payload.overrides)} tasks)")
    return payload, index


def check_composes(payload: batch.Payload, overrides: list[str]) -> None:
    """SlurmmlError, in one line, if the task's config does not compose with these overrides."""
    from slurmml.launcher.task import compose_config
    from slurmml.tracking.secrets import mask_overrides

    try:
        compose_config(payload, overrides)
    except Exception as error:
        given = " ".join(mask_overrides(overrides)) or "no overrides"
        raise SlurmmlError(f"cannot clone with {given}: {one_line(str(error))}") from None


def clone(registry: Any, parent_id: str, changes: list[str], replace: bool = False) -> Cloned:
    """Clone run `parent_id` with `changes` merged into its overrides (or, with replace, as its overrides)."""
    from slurmml.control.actions import refusal
    from slurmml.launcher.script_runs import clone_synced, script_overrides, synced_meta
    from slurmml.launcher.slurm_backend import recorded_script_maker
    from slurmml.registry.browse import config_maps

    parent = registry.run_with_sweep(parent_id)
    meta = synced_meta(registry, parent_id) if parent.get("sweep_id") is None else None
    values = {**config_maps(registry.conn, [parent_id])[0], **override_values(parent.get("overrides") or [])}
    if meta is not None:  # a run from another machine: its code and command line, queued here
        values.update(override_values(script_overrides(list(meta.get("argv") or []))))
        return clone_synced(registry, parent, meta, dataset_changes(list(changes), values), replace=replace)
    changes = dataset_changes(list(changes), values)
    why = refusal("clone", parent, parent["owner"], getpass.getuser())
    if why:
        raise SlurmmlError(why)
    launcher = launcher_overrides(changes)
    if launcher:
        raise SlurmmlError(f"{launcher[0]}: a clone is submitted with its sweep's launcher settings; "
                           f"overrides of hydra.launcher do not apply to it")
    backend = parent.get("backend")
    if backend not in ("slurm", "local"):
        raise SlurmmlError(f"run {parent_id}: its sweep has no backend slurmml knows ({backend!r})")
    cwd = Path(parent.get("cwd") or Path(parent["sweep_dir"]))
    payload, index = load_parent_payload(parent)
    overrides = list(changes) if replace else merge_overrides(list(payload.overrides[index]), list(changes))
    overrides = unmask_overrides(overrides, list(payload.overrides[index]))
    with working_dir(cwd):
        check_composes(payload, overrides)  # nothing is recorded, staged or submitted for overrides that do not compose
        if backend == "slurm":  # the staged payload has the real launcher settings; the registry's copy is masked
            maker = recorded_script_maker(payload.launcher or parent.get("launcher") or {})  # (older payloads lack them)
            return _launch(registry, parent, payload, overrides, "slurm", batch.missing_folders(maker.log_dir),
                           lambda staged: _submit_one(maker, staged))
        return _launch(registry, parent, payload, overrides, "local", [],
                       lambda staged: start_detached(staged, 0, cwd))


def _launch(registry: Any, parent: dict, payload: batch.Payload, overrides: list[str], backend: str,
            created: list[Path], submit: Callable[[Path], Any]) -> Cloned:
    """The clone as a one-run batch of the parent's sweep, under the sweep's next free job number."""
    sweep_id = parent["sweep_id"]
    for _ in range(RECORD_TRIES):
        target = BatchTarget(sweep_id, Path(parent["sweep_dir"]), registry.next_job_num(sweep_id), [overrides],
                             parent_id=parent["id"])
        staged = dataclasses.replace(payload, overrides=[overrides], initial_job_idx=target.initial_job_idx)
        try:
            _, submitted = launch_batch(target, staged, backend, lambda rows: record_runs(registry, sweep_id, rows),
                                        submit, created)
        except JobNumberTaken:
            continue
        except OSError as error:
            raise SlurmmlError(f"cannot start the clone of run {parent['id']}: {error.strerror or error}") from None
        (new_id,) = target.run_ids
        if backend == "slurm":
            (submission,) = submitted
            return Cloned(new_id, overrides, job_id=submission.task_job_id(0), log_path=submission.log_file(0))
        pid, log_path = submitted
        return Cloned(new_id, overrides, pid=pid, log_path=log_path)
    raise SlurmmlError(f"could not find a free job number in sweep {sweep_id} (other clones kept taking them)")


def _submit_one(maker: Any, batch_dir: Path) -> list[Any]:
    from slurmml.launcher.plan import ArrayChunk
    from slurmml.launcher.slurm_backend import submit_arrays

    return submit_arrays(maker, batch_dir, [ArrayChunk(offset=0, count=1)])


# -- the front ends' entry ----------------------------------------------------------------------------------

def clone_action(registry: Any, parent_id: str, changes: list[str], replace: bool = False) -> ActionResult:
    """`clone` as a run action (slurmml.control.actions.ActionResult): what `slurmml clone` prints, and what
    this module's main sends back to slurmml.control.actions.clone_run."""
    from slurmml.control.actions import ActionResult

    try:
        cloned = clone(registry, parent_id, changes, replace=replace)
    except SlurmmlError as error:
        return ActionResult(False, str(error))
    return ActionResult(True, f"cloned {parent_id} as {cloned.run_id} ({cloned.where})", new_run_id=cloned.run_id)


def main(argv: list[str]) -> int:
    """`python -m slurmml.launcher.clone REGISTRY RUN_ID [OVERRIDE...]`: clone with exactly these overrides.

    Prints the outcome as one JSON line, last on stdout (ActionResult.to_json_line); exits 1 if it failed.
    """
    from slurmml.control.actions import ActionResult
    from slurmml.registry.registry import Registry

    if len(argv) < 2:
        raise SystemExit("usage: python -m slurmml.launcher.clone REGISTRY RUN_ID [OVERRIDE...]")
    registry_path, parent_id, *overrides = argv
    try:
        registry = Registry(Path(registry_path), create=False)
    except SlurmmlError as error:
        result = ActionResult(False, str(error))
    else:
        result = clone_action(registry, parent_id, overrides, replace=True)
    print(result.to_json_line(), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
