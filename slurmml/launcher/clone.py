"""Clone a run: the same code and config as a run of a sweep, plus a change, as a new run of that sweep.

The parent's staged payload (its pickled task function, Hydra context and config) is reused, so the clone
runs the code the sweep was launched with, not whatever the checkout holds now. The new overrides are
checked by composing the config exactly as the task will (task.py) before anything is recorded, staged
or submitted: a bad override is one line and changes nothing. The clone is recorded (with its parent_id)
before it is submitted, and forgotten again if sbatch refuses it.

User code is unpickled here: front ends run this in a subprocess (`slurmml clone`, slurmml.control.actions).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

from slurmml.errors import SlurmmlError
from slurmml.launcher import batch
from slurmml.launcher.recording import run_id as make_run_id
from slurmml.launcher.recording import spool_path as make_spool_path

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


def import_path(argv: Optional[list[str]], cwd: Optional[str]) -> list[str]:
    """What the launch put on sys.path for the task's modules (sweep._payload): the script's folder and the cwd.

    Needed before the payload is unpickled: modules it refers to by name must be importable.
    """
    entries = []
    if cwd and argv and argv[0] and not argv[0].startswith("-"):
        entries.append(str((Path(cwd) / argv[0]).resolve().parent))
    if cwd:
        entries.append(cwd)
    return list(dict.fromkeys(entries))


# -- side effects ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _working_dir(path: Path) -> Iterator[None]:
    """Compose and submit from the sweep's working directory, as the launch did: relative sweep and log
    folders (hydra.sweep.dir=out) mean the same, and the job starts there (sbatch's cwd)."""
    before = os.getcwd()
    try:
        os.chdir(path)
    except OSError as error:
        raise SlurmmlError(f"cannot enter the sweep's working directory {path}: {error.strerror}") from None
    try:
        yield
    finally:
        os.chdir(before)


def _add_to_sys_path(entries: list[str]) -> None:
    for entry in reversed(entries):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def load_parent_payload(parent: dict) -> tuple[batch.Payload, Path, int]:
    """The parent's staged payload, its batch dir and its index in that batch, from its spool path
    (`<batch dir>/spool/<index>.jsonl`)."""
    spool = Path(parent["spool_path"])
    batch_dir, index = spool.parent.parent, int(spool.stem)
    if not (batch_dir / batch.PAYLOAD).is_file():
        raise SlurmmlError(f"run {parent['id']}: its staged payload {batch_dir / batch.PAYLOAD} is gone, so "
                           f"it cannot be cloned")
    _add_to_sys_path(import_path(parent.get("argv"), parent.get("cwd")))
    try:
        payload = batch.load_payload(batch_dir)
    except Exception as error:  # the sweep's code may no longer import: say what, in one line
        raise SlurmmlError(f"cannot load run {parent['id']}'s payload {batch_dir / batch.PAYLOAD}: "
                           f"{type(error).__name__}: {error}") from None
    _add_to_sys_path(payload.import_path)
    if not 0 <= index < len(payload.overrides):
        raise SlurmmlError(f"run {parent['id']}: task {index} is not in its payload ({len(payload.overrides)} tasks)")
    return payload, batch_dir, index


def compose(payload: batch.Payload, overrides: list[str]) -> Any:
    """The task's config for these overrides, composed as task.run_task does; SlurmmlError if it does not compose."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import setup_globals

    Singleton.set_state(payload.singleton_state)
    setup_globals()
    try:
        return payload.hydra_context.config_loader.load_sweep_config(payload.config, list(overrides))
    except Exception as error:
        from slurmml.tracking.secrets import mask_overrides

        given = " ".join(mask_overrides(overrides)) or "no overrides"
        raise SlurmmlError(f"cannot clone with {given}: {one_line(str(error))}") from None


def _slurm_maker(conf: dict) -> Any:
    """The sweep's ScriptMaker, rebuilt from its recorded launcher config and template."""
    from slurmml.launcher.slurm_backend import script_maker
    from slurmml.launcher.templates import load_template
    from slurmml.slurm.commands import available
    from slurmml.tracking.secrets import MASK

    if not available("sbatch"):
        raise SlurmmlError("sbatch not found on PATH: this machine cannot submit the clone to Slurm")
    if MASK in json.dumps(conf):  # recorded with secrets masked: the script would carry the mask, not the value
        raise SlurmmlError("the sweep's recorded launcher config has masked (secret-looking) values, so its sbatch "
                           "script cannot be rebuilt; launch the run again instead")
    return script_maker(conf, load_template(conf.get("template")))


def _record(registry: Any, parent: dict, overrides: list[str], local: bool) -> tuple[int, str, Path]:
    """Add the clone to the parent's sweep (SUBMITTING, parent_id set) under the next free job number."""
    from slurmml.launcher.local_backend import local_log_paths

    sweep_id, sweep_dir = parent["sweep_id"], Path(parent["sweep_dir"])
    for _ in range(RECORD_TRIES):
        job_num = registry.next_job_num(sweep_id)
        new_id, batch_dir = make_run_id(sweep_id, job_num), batch.batch_dir_for(sweep_dir, sweep_id, job_num)
        row = {"id": new_id, "job_num": job_num, "overrides": overrides, "parent_id": parent["id"],
               "spool_path": str(make_spool_path(batch_dir, 0)),
               "log_path": str(local_log_paths(batch_dir, 0)[1]) if local else None}
        try:
            registry.add_sweep({"id": sweep_id}, [row])  # the sweep is recorded already: only the run is added
        except sqlite3.IntegrityError:
            continue  # another clone took this job number meanwhile
        return job_num, new_id, batch_dir
    raise SlurmmlError(f"could not find a free job number in sweep {sweep_id} (other clones kept taking them)")


def _start_locally(batch_dir: Path, cwd: Path) -> tuple[int, str]:
    """Start the task detached (it outlives this command), its output in the local backend's log files.

    Not through run_command: that waits for the process, and this one must run on after we return.
    """
    from slurmml.launcher.local_backend import local_log_paths
    from slurmml.launcher.plan import inherited_job_variables

    out_path, err_path = local_log_paths(batch_dir, 0)
    out_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in set(inherited_job_variables(list(os.environ)))}
    with open(out_path, "ab") as out, open(err_path, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-u", "-m", "slurmml.launcher.task", str(batch_dir), "0"],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                start_new_session=True)
    return proc.pid, str(err_path)


def clone(registry: Any, parent_id: str, changes: list[str], replace: bool = False,
          me: Optional[str] = None) -> Cloned:
    """Clone run `parent_id` with `changes` merged into its overrides (or, with replace, as its overrides)."""
    from slurmml.control.actions import refusal

    parent = registry.run_with_sweep(parent_id)
    why = refusal("clone", parent, parent["owner"], me or getpass.getuser())
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
    payload, _, index = load_parent_payload(parent)
    overrides = list(changes) if replace else merge_overrides(list(payload.overrides[index]), list(changes))
    overrides = unmask_overrides(overrides, list(payload.overrides[index]))
    with _working_dir(cwd):
        compose(payload, overrides)  # nothing is recorded, staged or submitted for overrides that do not compose
        # the staged payload has the real launcher settings; the registry's copy is masked (older payloads lack them)
        maker = _slurm_maker(payload.launcher or parent.get("launcher") or {}) if backend == "slurm" else None

    job_num, new_id, batch_dir = _record(registry, parent, overrides, local=backend == "local")
    try:
        batch.stage(batch_dir, dataclasses.replace(payload, overrides=[overrides], initial_job_idx=job_num))
        if maker is not None:
            with _working_dir(cwd):
                (submission,) = _submit_one(maker, batch_dir)
        else:
            pid, log_path = _start_locally(batch_dir, cwd)
    except BaseException as error:
        registry.discard_runs(parent["sweep_id"], [new_id])  # nothing half-recorded, nothing half-staged
        shutil.rmtree(batch_dir, ignore_errors=True)
        if isinstance(error, OSError):
            raise SlurmmlError(f"cannot start the clone of run {parent_id}: {error.strerror or error}") from None
        raise
    if maker is None:  # no time limit here: the local backend's timeout_min is enforced by its waiting launcher
        batch.write_manifest(batch_dir, {"sweep_id": parent["sweep_id"], "backend": "local", "initial_job_idx": job_num,
                                         "num_tasks": 1, "cloned_from": parent_id})
        return Cloned(new_id, overrides, pid=pid, log_path=log_path)
    from slurmml.launcher.slurm_backend import manifest

    job_id, log_path = submission.task_job_id(0), submission.log_file(0)
    registry.mark_queued({new_id: (job_id, log_path)})
    batch.write_manifest(batch_dir, {**manifest(parent["sweep_id"], job_num, [submission], 1),
                                     "cloned_from": parent_id})
    return Cloned(new_id, overrides, job_id=job_id, log_path=log_path)


def _submit_one(maker: Any, batch_dir: Path) -> list[Any]:
    from slurmml.launcher.plan import ArrayChunk
    from slurmml.launcher.slurm_backend import submit_arrays

    return submit_arrays(maker, batch_dir, [ArrayChunk(offset=0, count=1)])
