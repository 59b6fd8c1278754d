"""A staged batch on disk: what every task of one launch needs, and what each task leaves behind.

Layout under the sweep directory (shared filesystem, one writer per file); a sweep
directory reused by a later command gets a new sweep id, so old results never mix in:
  .slurmml/<sweep id>/sweep.json                          when, where, the command line
  .slurmml/<sweep id>/batch_<first job num>/payload.pkl   hydra context, task function, config, overrides
  .slurmml/<sweep id>/batch_<first job num>/batch.json    manifest: arrays, job ids, log paths
  .slurmml/<sweep id>/batch_<first job num>/results/<i>.pkl  task i's JobReturn (written by task i)
  .slurmml/<sweep id>/batch_<first job num>/array_<k>.sbatch  the script of each submission
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from slurmml.errors import SlurmmlError

PAYLOAD = "payload.pkl"
MANIFEST = "batch.json"


@dataclass
class Payload:
    hydra_context: Any
    task_function: Any
    config: Any
    singleton_state: Any
    overrides: list[list[str]]
    initial_job_idx: int
    import_path: list[str]  # sys.path entries the task function's module needs
    max_requeues: int = 0  # max_num_timeout: requeues allowed when the time limit nears
    sweep_id: str = ""
    gpu_sample_interval_s: float = 5.0
    launcher: Optional[dict] = None  # the launcher's settings, unmasked: what a clone's sbatch script is built from


SWEEP_RECORD = "sweep.json"


def sweep_state_dir(sweep_dir: Path, sweep_id: str) -> Path:
    return sweep_dir / ".slurmml" / sweep_id


def batch_dir_for(sweep_dir: Path, sweep_id: str, initial_job_idx: int) -> Path:
    return sweep_state_dir(sweep_dir, sweep_id) / f"batch_{initial_job_idx}"


def missing_folders(*paths: Path) -> list[Path]:
    """Which of these folders and their parents do not exist yet, deepest first (to take back later)."""
    missing: set[Path] = set()
    for path in paths:
        for folder in [path, *path.parents]:
            if folder.exists():
                break
            missing.add(folder)
    return sorted(missing, key=lambda folder: len(folder.parts), reverse=True)


def unstage(sweep_dir: Path, sweep_id: str, batch_dir: Optional[Path], created: list[Path]) -> bool:
    """Remove a batch that was never queued (`batch_dir`; None when this launch staged nothing there), and
    its sweep's folder if no other batch is in it; then the folders in `created` that are left empty (never
    anything a user had there). True: the sweep is gone."""
    import shutil

    state_dir = sweep_state_dir(sweep_dir, sweep_id)
    whole = not [other for other in state_dir.glob("batch_*") if other != batch_dir]
    if whole:
        shutil.rmtree(state_dir, ignore_errors=True)
    elif batch_dir is not None:
        shutil.rmtree(batch_dir, ignore_errors=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty: someone else's files
            pass
    return whole


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same directory, then rename: readers never see half a file."""
    for folder in reversed([path.parent, *path.parent.parents]):  # new folders are user-only
        if not folder.exists():
            folder.mkdir(mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def stage(batch_dir: Path, payload: Payload) -> None:
    import cloudpickle

    try:
        data = cloudpickle.dumps(payload)
    except Exception as error:  # a lock, a socket, an open file reachable from the task function or its config
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise SlurmmlError(f"cannot pickle the task for its jobs: {first_line}") from None
    batch_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(batch_dir / PAYLOAD, data)


def import_path(argv: Optional[list[str]], cwd: Optional[str]) -> list[str]:
    """What a launch puts on sys.path for the task's modules (Payload.import_path): the script's folder and
    the cwd, from the launch's command line and working directory."""
    entries = []
    if cwd and argv and argv[0] and not argv[0].startswith("-"):
        entries.append(str((Path(cwd) / argv[0]).resolve().parent))
    if cwd:
        entries.append(cwd)
    return list(dict.fromkeys(entries))


def add_to_sys_path(entries: list[str]) -> None:
    """Put `entries` first on sys.path: modules a payload refers to by name must import before it is unpickled."""
    for entry in reversed(entries):
        if entry not in sys.path:
            sys.path.insert(0, entry)


_loaded: dict[Path, Payload] = {}


def load_staged_payload(batch_dir: Path, import_entries: list[str], whose: str, why: str) -> Payload:
    """The payload staged in `batch_dir`, for a clone or a resubmission: the sweep's module folders on sys.path
    first, and one SlurmmlError line if it is gone or its code no longer imports. `whose` names it in the
    message ("run X's"), `why` says what cannot happen without it ("it cannot be cloned")."""
    if not (batch_dir / PAYLOAD).is_file():
        raise SlurmmlError(f"{whose} staged payload {batch_dir / PAYLOAD} is gone, so {why}")
    add_to_sys_path(import_entries)
    try:
        return load_payload(batch_dir)
    except Exception as error:  # the sweep's code may no longer import: say what, in one line
        raise SlurmmlError(f"cannot load {whose} payload {batch_dir / PAYLOAD}: {type(error).__name__}: {error}") from None


def load_payload(batch_dir: Path) -> Payload:
    if batch_dir not in _loaded:
        import cloudpickle

        with open(batch_dir / PAYLOAD, "rb") as handle:
            _loaded[batch_dir] = cloudpickle.load(handle)
    return _loaded[batch_dir]


def result_path(batch_dir: Path, index: int) -> Path:
    return batch_dir / "results" / f"{index}.pkl"


def write_result(batch_dir: Path, index: int, job_return: Any) -> None:
    import cloudpickle

    try:
        data = cloudpickle.dumps(job_return)
    except Exception as error:  # an unpicklable return value must not hide the run's outcome
        print(f"slurmml: could not save the task's return value ({error}); saving None", file=sys.stderr)
        job_return.return_value = None
        data = cloudpickle.dumps(job_return)
    write_atomic(result_path(batch_dir, index), data)


def finished_indices(batch_dir: Path) -> set[int]:
    """Indices whose result file exists: one directory listing, no Slurm call."""
    try:
        names = os.listdir(batch_dir / "results")
    except FileNotFoundError:
        return set()
    return {int(n[:-4]) for n in names if n.endswith(".pkl") and n[:-4].isdigit()}


def read_result(batch_dir: Path, index: int) -> Any:
    import cloudpickle

    with open(result_path(batch_dir, index), "rb") as handle:
        return cloudpickle.load(handle)


def write_manifest(batch_dir: Path, manifest: dict[str, Any]) -> None:
    write_atomic(batch_dir / MANIFEST, json.dumps(manifest, indent=2).encode())
