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
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from slurmml.errors import SlurmmlError
from slurmml.launcher import batch
from slurmml.launcher.local_backend import start_detached
from slurmml.launcher.pipeline import BatchTarget, launch_batch
from slurmml.launcher.recording import JobNumberTaken, record_runs

if TYPE_CHECKING:
    from slurmml.control.actions import ActionResult

RECORD_TRIES = 5  # two clones into one sweep at once may pick the same job number: the second takes the next


@dataclasses.dataclass(frozen=True)
class Cloned:
    run_id: str
    overrides: list[str]
    job_id: Optional[str] = None  # Slurm backend
    pid: Optional[int] = None  # local backend
    log_path: Optional[str] = None

    @property
    def where(self) -> str:
        return f"job {self.job_id}" if self.job_id else f"local process {self.pid}"


# -- pure --------------------------------------------------------------------------------------------------

_OVERRIDE = re.compile(r"^(~|\+\+|\+)?([^=]*)")


def split_override(override: str) -> tuple[str, str]:
    """`++db.lr=1` -> ('++', 'db.lr'); `~seed` -> ('~', 'seed'); `model=mlp` -> ('', 'model')."""
    match = _OVERRIDE.match(override.strip())
    assert match is not None  # the pattern matches any string
    return match.group(1) or "", match.group(2).strip()


def merge_overrides(parent: list[str], changes: list[str]) -> list[str]:
    """The parent's overrides with `changes` applied, in the parent's order; new keys are appended.

    - `key=value` replaces the parent's override of `key`, keeping its `+`/`++` (the key is not in the
      primary config, so a plain `key=` would not compose); a change's own prefix wins.
    - `~key` drops the parent's override of `key`; it is kept as `~key` (delete from the config) unless
      the parent had added the key itself (`+key=`), which dropping already undoes.
    """
    merged = list(parent)
    for change in changes:
        prefix, key = split_override(change)
        mine = [index for index, override in enumerate(merged) if split_override(override)[1] == key]
        if prefix == "~":
            added_by_parent = any(split_override(merged[index])[0] == "+" for index in mine)
            merged = [override for index, override in enumerate(merged) if index not in mine]
            if not added_by_parent:
                merged.append(change)
            continue
        if not mine:
            merged.append(change)
            continue
        kept = split_override(merged[mine[0]])[0]
        if not prefix and kept in ("+", "++"):
            change = kept + change
        merged[mine[0]] = change
        merged = [override for index, override in enumerate(merged) if index not in mine[1:]]
    return merged


def unmask_overrides(overrides: list[str], parent: list[str]) -> list[str]:
    """Overrides read back from the registry carry "***" for secret values (`+api_key=***`): put back the
    parent's real value of that key, from its staged payload. A masked override the parent has no value
    for is refused rather than run with "***"."""
    from slurmml.tracking.secrets import MASK, mask_override

    real = {split_override(p)[1]: p for p in parent}
    unmasked = []
    for override in overrides:
        masked = MASK in override and mask_override(override.replace(MASK, "x")) == override
        if masked:
            name, key = override.partition("=")[0], split_override(override)[1]
            source = real.get(key)
            if source is None or mask_override(source).partition("=")[2] != override.partition("=")[2]:
                raise SlurmmlError(f"{override}: {MASK} stands for a masked secret, and the run has no {key} "
                                   f"override it could stand for; give the value itself")
            override = f"{name}={source.partition('=')[2]}"
        unmasked.append(override)
    return unmasked


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


def launcher_overrides(overrides: list[str]) -> list[str]:
    """Overrides of the launcher: a clone is submitted with its sweep's recorded launcher settings."""
    return [o for o in overrides if re.match(r"^(hydra\.launcher\b|hydra/launcher\b)", split_override(o)[1])]


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
    from slurmml.launcher.slurm_backend import recorded_script_maker

    parent = registry.run_with_sweep(parent_id)
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
