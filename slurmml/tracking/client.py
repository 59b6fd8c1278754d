"""The in-job API: `slurmml.log`, `slurmml.log_params`, `slurmml.log_artifact`, `slurmml.run`.

Inside a slurmml job (SLURMML_SPOOL set by the job wrapper) everything goes to that run's spool.
Outside slurmml (a plain `python train.py`) the same calls create a local run on first use:
`$SLURMML_HOME/runs/local-<YYYYmmdd-HHMMSS>-<4 hex>/spool.jsonl`, starting with a `start` record;
login-node commands find and register such spools later.

This module never opens the registry (compute nodes never write it) and imports nothing heavy: it starts in
every job (docs/architecture.md, "Compute nodes never write the registry" and "Layers").
The job wrapper calls `start_run(...)` before the task and `end_run(...)` after it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from slurmml.tracking import controls
from slurmml.tracking.secrets import mask_argv, mask_config, mask_environment, mask_overrides
from slurmml.tracking.spool import RUN_ID_ENV, SPOOL_ENV
from slurmml.tracking.writer import SpoolWriter

RUN_DIR_ENV = "SLURMML_RUN_DIR"  # optional: the run's folder, when the wrapper knows it
PACKAGES = ("torch", "numpy", "hydra-core", "omegaconf", "slurmml", "submitit")
MAX_ERROR_CHARS = 20_000

__all__ = ["log", "log_params", "log_artifact", "run", "current_writer", "start_run", "end_run", "RunInfo"]


class RunInfo:
    """The current run: its id, folder, spool file and masked config ({} when not known)."""

    __slots__ = ("id", "dir", "spool", "config")

    def __init__(self, id: str, dir: Path, spool: Path, config: Optional[dict[str, Any]] = None) -> None:
        self.id, self.dir, self.spool, self.config = id, dir, spool, config if config is not None else {}

    def __repr__(self) -> str:
        return f"RunInfo(id={self.id!r}, dir={str(self.dir)!r}, spool={str(self.spool)!r})"


_writer: Optional[SpoolWriter] = None
_info: Optional[RunInfo] = None
_requeue_pending = False  # a `requeue` record ended this execution: the run goes on in the next one
_lock = threading.Lock()
_time = time.time


# ---------------------------------------------------------------- public API


def log(step: Optional[int] = None, **metrics: Any) -> None:
    """Record metrics (numbers only) at an optional integer step: `slurmml.log(step=i, loss=0.3, acc=0.9)`.

    int and float are taken as they are; bools become 0.0/1.0, numpy and torch scalars go through
    float() (which copies a CUDA tensor to the host); anything else raises TypeError.
    Names that are not identifiers: `slurmml.log(**{"val/loss": 0.2})`.
    """
    if not metrics:
        return
    if not _NUMBER_TYPES.issuperset(map(type, metrics.values())):
        metrics = _numbers(metrics)
    if step is not None and type(step) is not int:
        step = _step(step)
    (_writer or current_writer()).write({"k": "m", "t": _time(), "s": step, "v": metrics})
    if controls._queue:  # a live control waits (slurmml.tracking.controls): one deque check when none does
        controls.take_at_log(step)


def log_params(**params: Any) -> None:
    """Record parameters (any JSON-able values, nested dicts allowed); secret-looking ones are masked."""
    if params:
        (_writer or current_writer()).write({"k": "p", "t": _time(), "v": mask_config(params)})


def log_artifact(path: Union[str, os.PathLike], name: Optional[str] = None, upload: Optional[bool] = None) -> None:
    """Record a file or folder (path and size in bytes); it stays where it is.

    With `upload` (default: SLURMML_UPLOAD_ARTIFACTS=1) its bytes also go to the object store, from a background
    thread (slurmml.tracking.artifacts): the record says "pending" at once, an `upload` record follows.
    A path that cannot be read is recorded with size null and reported on stderr, not raised:
    a typo in a checkpoint path must not fail a finished training run.
    """
    from slurmml.tracking import artifacts

    resolved = Path(path).expanduser().absolute()
    size = _size(resolved)
    if size is None:
        print(f"slurmml: log_artifact: cannot read {resolved}; recorded without a size", file=sys.stderr)
    writer = _writer or current_writer()
    record = {"k": "a", "t": _time(), "name": name or resolved.name, "path": str(resolved), "size": size}
    uploading = size is not None and isinstance(writer, SpoolWriter) and (
        upload if upload is not None else artifacts.upload_by_default())
    if uploading:
        record["upload"] = artifacts.PENDING
    writer.write(record)
    if uploading:
        artifacts.upload_later(writer, resolved, record["t"])


class _Run:
    """`slurmml.run`: the current run (created on first use outside slurmml)."""

    @property
    def id(self) -> str:
        return _current_info().id

    @property
    def dir(self) -> Path:
        return _current_info().dir

    @property
    def spool(self) -> Path:
        return _current_info().spool

    @property
    def config(self) -> dict[str, Any]:
        return _current_info().config

    def __repr__(self) -> str:
        info = _info
        return f"<slurmml run {info.id} in {info.dir}>" if info else "<slurmml run (not started)>"


run = _Run()


# ---------------------------------------------------------------- for the job wrapper


class _OtherRank:
    """The writer of a task that is not rank 0 of its job: the run's spool has one writer (rank 0), so what
    other ranks log goes nowhere, instead of into a stray local run of their own."""

    path = Path(os.devnull)
    closed = False

    def write(self, record: dict[str, Any]) -> None:
        pass

    def flush(self) -> bool:
        return True

    def close(self) -> None:
        pass


def rank(environ: Mapping[str, str] = os.environ) -> int:
    """This process's global rank (RANK, else SLURM_PROCID, else 0): only rank 0 writes a run's spool, result
    and checkpoints. RANK wins because under torchrun every process of one Slurm task has SLURM_PROCID 0."""
    for name in ("RANK", "SLURM_PROCID"):
        value = environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return 0


def current_writer() -> SpoolWriter:
    """The writer of the current run: the job's spool (SLURMML_SPOOL); nothing on a job's other ranks (the
    wrapper gives them the run's id and folder, not its spool); else a new local run."""
    global _writer, _info
    with _lock:
        if _writer is not None:
            return _writer
        spool = os.environ.get(SPOOL_ENV)
        run_id = os.environ.get(RUN_ID_ENV)
        run_dir = Path(os.environ.get(RUN_DIR_ENV) or os.getcwd())
        if spool:
            _info = RunInfo(run_id or Path(spool).stem, run_dir, Path(spool))
            _writer = SpoolWriter(spool)
        elif run_id:
            _info = RunInfo(run_id, run_dir, Path(os.devnull))
            _writer = _OtherRank()  # type: ignore[assignment]
        else:
            _info, _writer = _start_local_run()
        return _writer


controls.writer = current_writer  # where live controls write their answers


def start_run(
    spool_path: Union[str, os.PathLike],
    run_id: str,
    run_dir: Union[str, os.PathLike],
    config: Optional[Mapping[str, Any]] = None,
    overrides: Iterable[str] = (),
    node_spools: Iterable[str] = (),
) -> RunInfo:
    """Make this the current run and write its `start` record (config and overrides masked). `node_spools`: the
    files the job's other nodes write their GPU samples to (one writer each), for the ingest to read too."""
    global _writer, _info
    masked = mask_config(dict(config)) if config is not None else {}
    with _lock:
        previous = _writer
        if previous is not None and (previous.closed or previous.path != Path(spool_path)):
            previous.close()
            previous = None
        writer = previous or SpoolWriter(spool_path)
        info = RunInfo(str(run_id), Path(run_dir), Path(spool_path), masked)
        record = start_record(info, masked, mask_overrides(overrides))
        if node_spools:
            record["node_spools"] = [str(path) for path in node_spools]
        writer.write(record)
        _writer, _info = writer, info
    controls.start_reading(spool_path)
    return info


def end_run(state: str = "COMPLETED", exit_code: Optional[int] = 0, error: Optional[str] = None,
            result: Optional[float] = None) -> None:
    """Write the current run's `end` record (with the task's numeric `result`, if any) and flush.
    After a requeue record nothing is written: the run has not ended, its next execution goes on.
    Later records still reach the same spool."""
    writer = _writer
    if writer is None:
        return
    controls.stop_reading()
    if _requeue_pending:
        writer.close()
        return
    stop = controls.stopped()
    if stop is not None:  # a live `stop` ended the task: a clean end of its own kind, whatever unwound it
        state, exit_code, error = stop.state, 0, stop.reason
    if error is not None and len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS // 2] + "\n[...]\n" + error[-MAX_ERROR_CHARS // 2:]
    record = {"k": "end", "t": _time(), "state": state, "exit_code": exit_code, "error": error,
              "max_rss_mb": peak_rss_mb()}
    if result is not None:
        record["result"] = result
    writer.write(record)
    writer.close()


def record_requeue(reason: str, step: Optional[int], checkpoint: Optional[str]) -> None:
    """This execution ends in a requeue (tracking/requeue.py), written and flushed before `scontrol requeue`
    runs: Slurm's TERM may follow at once."""
    global _requeue_pending
    writer = _writer or current_writer()
    writer.write({"k": "requeue", "t": _time(), "reason": reason, "step": step, "checkpoint": checkpoint})
    writer.flush()
    _requeue_pending = True


def record_requeue_refused(reason: str, problem: str) -> None:
    """Slurm refused the requeue just recorded: this execution goes on."""
    global _requeue_pending
    writer = _writer or current_writer()
    writer.write({"k": "requeue_refused", "t": _time(), "reason": reason, "problem": problem})
    writer.flush()
    _requeue_pending = False


def record_resume(step: int, checkpoint: str) -> None:
    """The task continues from the checkpoint of `step`: the registry supersedes the points earlier
    executions logged after it, so each step keeps one value."""
    (_writer or current_writer()).write({"k": "resume", "t": _time(), "step": step, "checkpoint": checkpoint})


def peak_rss_mb() -> Optional[float]:
    """The largest resident size this process (or a child it waited for) reached, in MB. Slurm samples
    memory every JobAcctGatherFrequency seconds, so a job that ends before the first sample has no MaxRSS
    in sacct; the run's own figure stands in for it there (slurmml.report.collect)."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(peak_kb / 1024, 1) if peak_kb else None  # Linux counts in KB


def start_record(info: RunInfo, config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    return {
        "k": "start", "t": _time(), "run_id": info.id, "host": _hostname(), "pid": os.getpid(),
        "run_dir": str(info.dir), "config": config, "overrides": overrides,
        "argv": mask_argv(sys.argv), "cwd": os.getcwd(), "environment": environment(),
    }


def environment() -> dict[str, Any]:
    slurm = {name: value for name, value in os.environ.items() if name.startswith("SLURM_")}
    info: dict[str, Any] = {
        "python": sys.version.split()[0], "executable": sys.executable,
        "packages": package_versions(PACKAGES), "slurm": mask_environment(slurm),
    }
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        info["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return info


def package_versions(names: Iterable[str]) -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# ---------------------------------------------------------------- internals


_NUMBER_TYPES = frozenset({float, int})


def _numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    converted = {}
    for name, value in metrics.items():
        kind = type(value)
        if kind is float or kind is int:
            converted[name] = value
            continue
        if isinstance(value, (str, bytes, bytearray)) or value is None:
            raise TypeError(f"slurmml.log: metric {name!r} must be a number, not {kind.__name__} {value!r}")
        try:
            converted[name] = float(value)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"slurmml.log: metric {name!r} must be a number or a numpy/torch scalar, "
                f"not {kind.__name__} ({error})") from None
    return converted


def _step(step: Any) -> int:
    try:
        return step.__index__()
    except (AttributeError, TypeError):
        raise TypeError(f"slurmml.log: step must be an integer or None, not {type(step).__name__} {step!r}") from None


def _size(path: Path) -> Optional[int]:
    try:
        if not path.is_dir():
            return path.stat().st_size
        total = 0
        for folder, _, files in os.walk(path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except OSError:
                    continue
        return total
    except OSError:
        return None


def _hostname() -> str:
    try:
        return os.uname().nodename
    except AttributeError:  # not POSIX
        import socket

        return socket.gethostname()


def _current_info() -> RunInfo:
    if _info is None:
        current_writer()
    assert _info is not None
    return _info


def new_local_run_id() -> str:
    return f"local-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"


def _start_local_run() -> tuple[RunInfo, SpoolWriter]:
    from slurmml.home import slurmml_home

    runs = slurmml_home() / "runs"
    runs.mkdir(parents=True, exist_ok=True, mode=0o700)
    while True:
        run_id = new_local_run_id()
        run_dir = runs / run_id
        try:
            run_dir.mkdir(mode=0o700)
        except FileExistsError:
            continue
        break
    info = RunInfo(run_id, run_dir, run_dir / "spool.jsonl")
    writer = SpoolWriter(info.spool)
    config, overrides = hydra_run_config()
    start = start_record(info, mask_config(config), mask_overrides(overrides))
    writer.write(start)
    controls.start_reading(info.spool)
    _ship_local_run(info, start)  # before _finish_at_exit: its last ship runs after the end record (atexit order)
    _finish_at_exit()
    return info, writer


def _ship_local_run(info: RunInfo, start: dict[str, Any]) -> None:
    """Ship the run to the object store while it runs, if one is configured (slurmml.tracking.shipper)."""
    from slurmml.tracking.shipper import shipping_enabled, start_shipping

    if not shipping_enabled():
        return
    script = sys.argv[0] if sys.argv and os.path.isfile(sys.argv[0]) else None
    start_shipping(info.id, info.dir, argv=start["argv"], cwd=start["cwd"],
                   script=os.path.abspath(script) if script else None, host=start["host"], created=start["t"])


def hydra_run_config() -> tuple[dict[str, Any], list[str]]:
    """In a plain Hydra app (`python train.py lr=0.1`, not under slurmml's launcher): the task's resolved config,
    which Hydra wrote to the run folder before calling the task, and its overrides; else ({}, [])."""
    if "hydra" not in sys.modules:  # not a Hydra app: nothing to import
        return {}, []
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if not HydraConfig.initialized():
            return {}, []
        hydra = HydraConfig.get()
        path = Path(hydra.runtime.output_dir) / str(hydra.output_subdir or ".hydra") / "config.yaml"
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}
        return config if isinstance(config, dict) else {}, [str(o) for o in hydra.overrides.task]
    except Exception:  # a Hydra this does not understand: the run is recorded all the same, without its config
        return {}, []


_uncaught: list[str] = []


def _finish_at_exit() -> None:
    """A plain script's run ends with the interpreter: FAILED if an exception escaped, else COMPLETED.

    Registered after the writer's own exit handler, so it runs first (atexit is last in, first out).
    """
    import atexit
    import traceback

    previous_hook = sys.excepthook

    def remember(kind: Any, error: Any, trace: Any) -> None:
        _uncaught.append("".join(traceback.format_exception(kind, error, trace)))
        previous_hook(kind, error, trace)

    sys.excepthook = remember
    atexit.register(lambda: end_run("FAILED", 1, _uncaught[-1]) if _uncaught else end_run("COMPLETED", 0))


def _reset() -> None:
    """Forget the current run (tests; a process that runs several tasks after end_run)."""
    global _writer, _info, _requeue_pending
    with _lock:
        if _writer is not None:
            _writer.close()
        _writer = _info = None
        _requeue_pending = False
    controls._reset()
