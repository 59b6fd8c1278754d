"""Checkpoints of a run's state: `slurmml.save_checkpoint(step, ...)` and `slurmml.load_checkpoint(...)`.

A checkpoint is one file, `<run dir>/checkpoints/step_<step, 9 digits>.pt`, holding the state_dict() of each
torch object given (model, optimizer, scheduler, GradScaler: anything with state_dict/load_state_dict), any
plain picklable values (epoch, a numpy Generator, ...), the step, the save time, the run's masked config and
the random states of Python, NumPy (its global RNG, when numpy is imported) and torch (CPU and every CUDA
device). It is written to a temporary file in the same folder, fsynced, then renamed over the final name, so a
job killed mid-write leaves the previous checkpoints whole. "Newest" means the highest step.

Files only, in the run's folder: compute nodes never write the registry (docs/architecture.md). With torch
imported the file is torch.save's zip format; without it, a plain pickle, so plain-Python state needs neither
torch nor numpy. Sharded or distributed checkpoints (torch.distributed.checkpoint, FSDP sharded state) are out
of scope: each call saves what this one process holds, by default on rank 0 only.
"""

from __future__ import annotations

import os
import pickle
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional, Union

from slurmml.core.config import flatten
from slurmml.errors import SlurmmlError
from slurmml.tracking import client
from slurmml.tracking.spool import SPOOL_ENV

FOLDER = "checkpoints"
FORMAT = "slurmml-checkpoint-1"
PREFIX, SUFFIX = "step_", ".pt"
STALE_TEMP_S = 3600  # a temporary file this old is a write killed midway (time limit, preemption)
MAX_KEYS_NAMED = 5
_ZIP_MAGIC, _ZIP_END, _ZIP_TAIL = b"PK\x03\x04", b"PK\x05\x06", 22 + 65535  # torch.save's format
_PICKLE_MAGIC = b"\x80"  # pickle protocol 2 and later

__all__ = ["save_checkpoint", "load_checkpoint", "Checkpoint"]


class Checkpoint:
    """What load_checkpoint found: its step, file, save time, masked config and the plain values saved with it."""

    __slots__ = ("step", "path", "time", "config", "values")

    def __init__(self, step: int, path: Path, time: float, config: dict[str, Any], values: dict[str, Any]) -> None:
        self.step, self.path, self.time, self.config, self.values = step, path, time, config, values

    def __repr__(self) -> str:
        return f"Checkpoint(step={self.step}, path={str(self.path)!r}, values={sorted(self.values)})"


def save_checkpoint(step: int, *, keep: Optional[int] = 3, folder: Union[str, os.PathLike, None] = None,
                    all_ranks: bool = False, **objects: Any) -> Optional[Path]:
    """Save `objects` as the checkpoint of `step`, keep the newest `keep` (None: all); return the file's path.

    `slurmml.save_checkpoint(step, model=model, optimizer=opt, scheduler=sched, epoch=epoch)`. Objects with
    state_dict() are saved as their state_dict; anything else is pickled as it is. The folder defaults to
    `<slurmml.run.dir>/checkpoints`. On ranks other than 0 (RANK, else SLURM_PROCID) nothing is written and
    None is returned, unless all_ranks=True (then give each rank its own folder). Not for sharded state.
    An unwritable folder or a full disk raises SlurmmlError, leaving no partial file behind.
    """
    step = _step(step)
    if keep is not None and keep < 1:
        raise ValueError(f"save_checkpoint: keep must be at least 1 or None, not {keep!r}")
    if not all_ranks and client.rank() != 0:
        return None
    run = _run(folder)
    target = Path(folder) if folder is not None else Path(client.run.dir) / FOLDER
    stateful = sorted(name for name, obj in objects.items() if callable(getattr(obj, "state_dict", None)))
    payload = {
        "format": FORMAT, "step": step, "time": time.time(),
        "run_id": run.id if run else None, "config": run.config if run else {},
        "objects": {name: obj.state_dict() if name in stateful else obj for name, obj in objects.items()},
        "stateful": stateful, "rng": _rng_states(),
    }
    path = target / f"{PREFIX}{step:09d}{SUFFIX}"
    _write_atomically(payload, path)
    if keep is not None:
        _prune(target, keep, path)
    return path


def load_checkpoint(*, folder: Union[str, os.PathLike, None] = None, map_location: Any = "cpu",
                    restore_rng: bool = True, **objects: Any) -> Optional[Checkpoint]:
    """Load the newest complete checkpoint into `objects`; None when the folder holds none.

    `ckpt = slurmml.load_checkpoint(model=model, optimizer=opt)`, then `ckpt.step`, `ckpt.values["epoch"]`.
    Each object gets load_state_dict() of what was saved under its name; tensors load onto `map_location`.
    A torn (truncated) or corrupt newest file is skipped with one line on stderr and the one before it is
    used. The random states saved are restored unless restore_rng=False, so the run continues with the
    numbers it would have drawn. A config that differs from the current run's is named in one line on stderr.
    """
    target = Path(folder) if folder is not None else Path(client.run.dir) / FOLDER
    newest = _newest_readable(target, map_location)
    if newest is None:
        return None
    path, payload = newest
    stateful = payload["stateful"]
    found = Checkpoint(payload["step"], path, payload["time"], payload["config"],
                       {name: value for name, value in payload["objects"].items() if name not in stateful})
    run = _run(folder)
    if run is not None and run.config and found.config:
        _warn_if_config_differs(found, run.config)
    for name, obj in objects.items():
        if name not in stateful:
            held = ", ".join(stateful) or "no state_dicts"
            raise SlurmmlError(f"checkpoint {found.path} has no state_dict named {name!r} (it holds {held})")
        obj.load_state_dict(payload["objects"][name])
    if restore_rng:
        _restore_rng(payload["rng"])
    if run is not None and client.rank() == 0 and payload.get("run_id") == run.id:
        # the run's own checkpoint: it goes on from there, and the points it logged after it are superseded
        # (another run's, a pretrained one, is not a resume)
        client.record_resume(found.step, str(found.path))
    return found


# ---------------------------------------------------------------- writing


def _write_atomically(payload: dict[str, Any], path: Path) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(3).hex()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "xb") as file:
            torch = sys.modules.get("torch")  # torch objects imply torch is imported; never import it here
            if torch is not None:
                torch.save(payload, file)
            else:
                pickle.dump(payload, file, protocol=pickle.HIGHEST_PROTOCOL)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as error:
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass  # it was never created: the folder refused it
        if isinstance(error, OSError):
            raise SlurmmlError(f"cannot write checkpoint {path}: {error.strerror or error}") from None
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; some shared filesystems refuse fsync on a folder, which is harmless."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _prune(folder: Path, keep: int, written: Path) -> None:
    """Remove all but the newest `keep` checkpoints (never the one just written) and stale temporary files."""
    doomed = [path for _, path in _checkpoint_files(folder)[keep:] if path != written]
    now = time.time()
    for path in folder.glob(f".{PREFIX}*{SUFFIX}.tmp-*"):
        try:
            if now - path.stat().st_mtime > STALE_TEMP_S:
                doomed.append(path)
        except OSError:
            continue
    for path in doomed:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:
            print(f"slurmml: save_checkpoint: cannot remove old checkpoint {path}: {error.strerror}", file=sys.stderr)


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"python": random.getstate()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        states["numpy"] = numpy.random.get_state()
    torch = sys.modules.get("torch")
    if torch is not None:
        states["torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
    return states


# ---------------------------------------------------------------- reading


def _checkpoint_files(folder: Path) -> list[tuple[int, Path]]:
    """The folder's checkpoints, newest (highest step) first; temporary files are not among them."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise SlurmmlError(f"cannot read the checkpoint folder {folder}: {error.strerror or error}") from None
    found = []
    for name in names:
        digits = name[len(PREFIX):-len(SUFFIX)]
        if name.startswith(PREFIX) and name.endswith(SUFFIX) and digits.isdigit():
            found.append((int(digits), folder / name))
    return sorted(found, reverse=True)


def _newest_readable(folder: Path, map_location: Any) -> Optional[tuple[Path, dict[str, Any]]]:
    for _, path in _checkpoint_files(folder):
        try:
            return path, _read(path, map_location)
        except SlurmmlError:
            raise
        except Exception as error:  # whatever a torn or corrupt file raises while it is parsed
            print(f"slurmml: load_checkpoint: skipping {path}: truncated or corrupt ({_reason(error)})", file=sys.stderr)
    return None


def _read(path: Path, map_location: Any) -> dict[str, Any]:
    with open(path, "rb") as file:
        magic = file.read(4)
        if magic.startswith(_PICKLE_MAGIC):
            file.seek(0)
            payload = pickle.load(file)  # written without torch; this run's own file, as below
        elif magic != _ZIP_MAGIC:
            raise ValueError("not a checkpoint file" if magic else "empty file")
        elif not _ends_like_a_zip(file):
            raise ValueError("cut short: its zip archive has no end record")
    if magic == _ZIP_MAGIC:
        try:
            import torch
        except ImportError:
            raise SlurmmlError(f"checkpoint {path} was saved with torch, which is not installed here") from None
        # weights_only=False: the file holds RNG states and plain Python values, and it is this run's own.
        # A path, not the open file: torch then names a torn zip plainly ("failed finding central directory").
        payload = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError("not a slurmml checkpoint")
    return payload


def _ends_like_a_zip(file: Any) -> bool:
    """A zip ends with its end-of-central-directory record (after a comment of at most 64 KiB); torch's own
    error for a file cut short can be a bare "[Errno 22] Invalid argument"."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - _ZIP_TAIL))
    return _ZIP_END in file.read()


def _restore_rng(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    if "numpy" in states:
        try:
            import numpy
        except ImportError:
            pass  # nothing here can draw from numpy's RNG
        else:
            numpy.random.set_state(states["numpy"])
    if "torch" in states:
        import torch  # the file was read with torch, so it is there

        torch.set_rng_state(states["torch"].cpu())
        saved = states.get("cuda", [])
        devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
        for device, state in zip(range(devices), saved):
            torch.cuda.set_rng_state(state.cpu(), device)
        if saved and len(saved) != devices:
            print(f"slurmml: load_checkpoint: the checkpoint has random states for {len(saved)} CUDA device(s) and "
                  f"this process sees {devices}; restored {min(devices, len(saved))}", file=sys.stderr)


def _warn_if_config_differs(found: Checkpoint, config: dict[str, Any]) -> None:
    saved, current = dict(flatten(found.config, keep_empty=True)), dict(flatten(config, keep_empty=True))
    differing = sorted(key for key in saved.keys() | current.keys() if saved.get(key, _MISSING) != current.get(key, _MISSING))
    if not differing:
        return
    named = ", ".join(differing[:MAX_KEYS_NAMED])
    if len(differing) > MAX_KEYS_NAMED:
        named += f" and {len(differing) - MAX_KEYS_NAMED} more"
    print(f"slurmml: load_checkpoint: {found.path.name} was saved with a different config: {named}", file=sys.stderr)


# ---------------------------------------------------------------- small helpers


_MISSING = object()


def _run(folder: Union[str, os.PathLike, None]) -> Any:
    """The current run, whose id and config go with a checkpoint. With an explicit folder outside slurmml,
    none: asking for one would start a local run just to record its empty config."""
    return client.run if folder is None or os.environ.get(SPOOL_ENV) else None


def _step(step: Any) -> int:
    try:
        value = step.__index__()
    except (AttributeError, TypeError):
        raise TypeError(f"save_checkpoint: step must be an integer, not {type(step).__name__} {step!r}") from None
    if value < 0:
        raise ValueError(f"save_checkpoint: step must not be negative, not {value}")
    return value


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()).split(". ")[0] or type(error).__name__  # torch adds advice after the first
    return text if len(text) <= 160 else text[:157] + "..."
