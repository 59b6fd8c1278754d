"""Clone a run that came from another machine: its code snapshot and command line, queued on this cluster.

A run synced from a workstation or a notebook (slurmml sync) has no staged Hydra payload, but its run.json names
the script, the command-line overrides and a snapshot of the code that ran (slurmml.storage.shipping). Its clone
unpacks that snapshot once (content-addressed under $SLURMML_HOME/code/), records a new one-run sweep whose run
has the synced run as its parent, and submits one sbatch job that runs the script there through
slurmml.launcher.script_task, with the parent's overrides plus the changes. Launcher settings (partition, time,
GPUs) are `hydra.launcher.FIELD=VALUE` changes, as on the command line of a sweep.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import secrets
import time
from pathlib import Path
from typing import Any, Optional

from slurmml.errors import SlurmmlError
from slurmml.launcher.overrides import Cloned, launcher_overrides, merge_overrides

LAUNCHER_PREFIX = "hydra.launcher."


def script_overrides(argv: list[str]) -> list[str]:
    """The Hydra overrides of a recorded command line (after the script): `key=value` words, not flags."""
    return [word for word in argv[1:] if "=" in word and not word.startswith("-")]


def launcher_settings(changes: list[str]) -> dict[str, Any]:
    """`hydra.launcher.partition=cpu` ... as launcher fields, values parsed as YAML scalars (as Hydra does)."""
    import yaml

    settings = {}
    for change in launcher_overrides(changes):
        key, _, value = change.partition("=")
        settings[key.lstrip("+")[len(LAUNCHER_PREFIX):]] = yaml.safe_load(value) if value else None
    return settings


def script_in(meta: dict, recorded: str) -> str:
    """The script's path relative to the run's cwd: the recorded argv[0] if relative, else where git placed it
    in the repository (relative to the cwd's place there), else its bare name."""
    import os

    if not Path(recorded).is_absolute():
        return recorded
    git = meta.get("git") or {}
    if git.get("script"):
        return os.path.relpath(git["script"], git.get("cwd") or ".")
    return Path(recorded).name


def code_folder(meta: dict, root: Path) -> Path:
    """The run's code snapshot, unpacked once per digest under `root` (into a temporary folder, then renamed: a
    folder under its digest is complete), and the folder in it that stands for the run's original cwd."""
    import os
    import shutil

    from slurmml.storage.s3 import open_store
    from slurmml.storage.shipping import fetch_code

    code = meta.get("code") or {}
    digest = str(code.get("digest") or "")
    if not digest:
        raise SlurmmlError(f"run {meta.get('run_id', '?')} has no code snapshot ({code.get('note') or 'none taken'})")
    folder = root / digest
    if not folder.is_dir():
        temporary = root / f".{digest}.{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        fetch_code(open_store(), meta, temporary)
        try:
            os.rename(temporary, folder)
        except OSError:  # another clone unpacked the same code first: theirs is the same bytes
            shutil.rmtree(temporary, ignore_errors=True)
    cwd = folder / code["cwd"] if code.get("cwd") else folder
    return cwd if cwd.is_dir() else folder


def synced_meta(registry: Any, run_id: str) -> Optional[dict[str, Any]]:
    row = registry.conn.execute("SELECT meta FROM synced_runs WHERE run_id = ?", (run_id,)).fetchone()
    return json.loads(row[0]) if row and row[0] else None


def clone_synced(registry: Any, parent: dict, meta: dict, changes: list[str], replace: bool = False) -> Cloned:
    """Queue the clone of synced run `parent` (its run.json is `meta`) on Slurm."""
    from slurmml.home import slurmml_home
    from slurmml.launcher.config import SlurmQueueConf
    from slurmml.launcher.pipeline import BatchTarget, launch_batch
    from slurmml.launcher.recording import record_runs
    from slurmml.launcher.script_task import ScriptPayload, ScriptRun
    from slurmml.launcher.slurm_backend import recorded_script_maker, submit_arrays
    from slurmml.launcher.plan import ArrayChunk

    argv = list(meta.get("argv") or [])
    if not argv or not meta.get("code"):
        raise SlurmmlError(f"run {parent['id']}: its machine shipped no code snapshot or command line, so it cannot "
                           f"be cloned here")
    task_changes = [c for c in changes if c not in launcher_overrides(changes)]
    overrides = list(task_changes) if replace else merge_overrides(script_overrides(argv), task_changes)
    home = slurmml_home()
    cwd = code_folder(meta, home / "code")
    script = script_in(meta, argv[0])
    if not (cwd / script).is_file():
        raise SlurmmlError(f"run {parent['id']}: {script} is not in its code snapshot")
    sweep_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    sweep_dir = home / "clones" / sweep_id
    conf = {**dataclasses.asdict(SlurmQueueConf()), "submitit_folder": str(sweep_dir / ".slurmml" / "logs"),
            "name": Path(script).stem, **launcher_settings(changes)}
    maker = dataclasses.replace(recorded_script_maker(conf), task_module="slurmml.launcher.script_task")
    target = BatchTarget(sweep_id, sweep_dir, 0, [overrides], parent_id=parent["id"])
    (run_id,) = target.run_ids
    hydra = "hydra" in (cwd / script).read_text(errors="replace")
    payload = ScriptPayload(str(cwd), script, [ScriptRun(run_id, overrides, str(sweep_dir / "0"))], hydra)
    sweep = {"id": sweep_id, "name": f"clone of {parent['id']}", "user": getpass.getuser(), "created": time.time(),
             "argv": [script, *overrides], "cwd": str(cwd), "sweep_dir": str(sweep_dir), "backend": "slurm",
             "git_commit": (meta.get("git") or {}).get("commit"), "git_dirty": (meta.get("git") or {}).get("dirty"),
             "git_diff": (meta.get("git") or {}).get("diff"), "launcher": conf}
    registry.add_sweep(sweep, [])

    def record(rows: list[dict]) -> Any:
        return record_runs(registry, sweep_id, rows)

    try:
        _, submitted = launch_batch(target, payload, "slurm", record,  # type: ignore[arg-type]
                                    lambda staged: submit_arrays(maker, staged, [ArrayChunk(offset=0, count=1)]))
    except Exception:
        registry.discard_runs(sweep_id, [])
        raise
    (submission,) = submitted
    return Cloned(run_id, overrides, job_id=submission.task_job_id(0), log_path=submission.log_file(0))
