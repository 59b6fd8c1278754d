"""Requeue on Slurm's warning signal: `slurmml.checkpoint_point(step, every=N, model=..., optimizer=...)`.

Slurm sends USR2 `signal_delay_s` before the time limit (the launcher asks for it), and at preemption
(`preempt_send_user_signal`). The handler only sets a flag. The task's next checkpoint point sees it (all
ranks at the same step: one tiny all-reduce when torch.distributed is initialized), saves, and rank 0 asks
Slurm why (core/requeue.py), writes a `requeue` record into the run's spool and runs `scontrol requeue` on its
own job; then every rank raises Requeued, which ends the process with exit code 0. The next execution's
`slurmml.load_checkpoint(...)` continues from the step saved.

A task that never calls a checkpoint point (or `stop_requested`) is requeued at once when the signal comes,
without a save, as submitit does; one that calls them but reaches none in time (a step longer than the
warning) is requeued without a save after three quarters of the warning. A time-limit requeue counts against
max_num_timeout; a preemption does not. A job that is cancelled or killed for memory gets TERM/KILL, not
USR2, and is never requeued here.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from slurmml.core import requeue as rules
from slurmml.core.job_env import job_id_from_environment, restart_count
from slurmml.tracking import client
from slurmml.tracking.ranks import agree, barrier, distributed, flag_from_rank_zero, value_from_rank_zero
from slurmml.tracking.spool import SPOOL_ENV

MAX_NUM_TIMEOUT_ENV = "SLURMML_MAX_NUM_TIMEOUT"  # exported by the job wrapper; a plain sbatch script may set them
SIGNAL_DELAY_ENV = "SLURMML_SIGNAL_DELAY_S"
WARNING_SIGNAL = signal.SIGUSR2

__all__ = ["checkpoint_point", "stop_requested", "requeue_after_save", "Requeued"]


class Requeued(SystemExit):
    """Raised on every rank once the job has requeued itself: it unwinds the training code (an `except
    Exception` there does not catch it) and ends the process with exit code 0."""

    def __init__(self, reason: str) -> None:
        super().__init__(0)
        self.reason = reason


class _State:
    def __init__(self) -> None:
        self.warned = threading.Event()
        self.warned_at: Optional[float] = None
        self.cooperative = False  # the task calls checkpoint points: it saves before the requeue
        self.installed = False
        self.requeued: Optional[str] = None  # the reason, once `scontrol requeue` answered
        self.slurm_view: Optional[tuple[str, dict[str, str]]] = None  # (reason, scontrol fields), asked once
        self.stop_at: Optional[float] = None  # when the checkpoint points stop: core.requeue.stop_at
        self.lock = threading.Lock()


_state = _State()


# ---------------------------------------------------------------- public API


def stop_requested(sync: bool = True) -> bool:
    """True when the task should save and requeue: Slurm's warning signal came (time limit or preemption) and,
    for a time limit Slurm warned of early, EndTime minus the lead has come (core.requeue.stop_at). With
    torch.distributed initialized and sync=True, every rank gets the same answer (a few all-reduces: call it at
    the same point on every rank). sync=False answers for this process alone, from what it knows so far."""
    _opt_in()
    if not sync:
        return _state.warned.is_set() and (_state.stop_at is None or time.time() >= _state.stop_at)
    return _time_to_stop()


def checkpoint_point(step: int, *, every: Optional[int] = None, keep: Optional[int] = 3, all_ranks: bool = False,
                     folder: Union[str, os.PathLike, None] = None, **objects: Any) -> Optional[Path]:
    """Call once per step (or epoch) on every rank. Saves a checkpoint every `every` steps (None: only when
    stopping); when Slurm's warning came, saves now, requeues the job and raises Requeued. If Slurm refuses
    the requeue (`--no-requeue`, JobRequeue=0) or none is left, says so in one line and training goes on to
    the limit, with the checkpoint saved. Returns the checkpoint written, if any (None on ranks other than 0).
    `keep`, `all_ranks` and `folder` mean what they mean for slurmml.save_checkpoint. If a rank ends while the
    others save, rank 0 still requeues (its own save is whole) and the others end, each saying so in one line."""
    from slurmml.tracking.checkpoint import save_checkpoint

    from slurmml.tracking import controls

    _opt_in()
    controls.at_checkpoints = True
    stopping = _time_to_stop()
    path = None
    if stopping or (every and step % every == 0):
        path = save_checkpoint(step, keep=keep, all_ranks=all_ranks, folder=folder, **objects)
    if stopping:  # live controls wait for the next execution: a rank may have ended during this save
        requeue_after_save(step, path)
    else:  # live controls (`slurmml set / snapshot / stop`) take effect here, on every rank at this step
        controls.take(step, save=lambda: path or save_checkpoint(step, keep=keep, all_ranks=all_ranks, folder=folder,
                                                                 **objects),
                      distributed=distributed())
    return path


def requeue_after_save(step: Optional[int] = None, checkpoint: Union[str, os.PathLike, None] = None) -> None:
    """For training loops that save their own way (Lightning, Hugging Face: slurmml.integrations): call on
    every rank once the state of `step` is saved after stop_requested() said True. Rank 0 requeues the job;
    once Slurm accepted, every rank raises Requeued. Refused or none left: returns, and training goes on."""
    saved = Path(checkpoint) if checkpoint else None
    try:
        barrier()  # every rank's save is done before the job is requeued
    except RuntimeError as error:  # a rank ended while saving (its connections closed): rank 0's own save is whole
        _say(f"slurmml: a rank ended while step {step} was being saved ({str(error).splitlines()[0][:160]}); "
             + ("requeueing without it" if client.rank() == 0 else "ending this rank"))
        if client.rank() == 0 and requeue_now(step, saved):
            raise Requeued(_state.requeued or "requeued") from None
        raise SystemExit(1) from None  # the group is broken: no rank can train on
    requeued = requeue_now(step, saved) if client.rank() == 0 else False
    if flag_from_rank_zero(requeued):
        raise Requeued(_state.requeued or "requeued")
    _state.warned.clear()  # not requeued: train on; a second signal would only repeat the refusal
    _state.stop_at = _state.slurm_view = _state.warned_at = None


# ---------------------------------------------------------------- for the job wrapper


def install(environ: Mapping[str, str] = os.environ) -> bool:
    """Take Slurm's warning signal (its default action would kill the task). Main thread only; False elsewhere."""
    if _state.installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(WARNING_SIGNAL, _on_warning)
    _state.installed = True
    return True


def requeue_now(step: Optional[int] = None, checkpoint: Optional[Path] = None) -> bool:
    """Rank 0: ask Slurm why the signal came, decide, record it in the spool and requeue this job. True once
    Slurm accepted the requeue (also when an earlier call did)."""
    from slurmml.slurm.commands import run_command

    with _state.lock:
        if _state.requeued:
            return True
        job_id = job_id_from_environment(os.environ, default="")
        reason, _ = _slurm_view()
        counts = _read_counts()
        # without a count (a plain sbatch script starts a new local run each execution), Slurm's restart count
        # is the floor: never more time-limit requeues than max_num_timeout
        used = counts.get(rules.TIMEOUT, 0) if counts else restart_count(os.environ)
        decision = rules.decide(reason, used, _max_num_timeout(), job_id)
        _say(decision.message)
        if not decision.requeue:
            return False
        client.record_requeue(reason, step, str(checkpoint) if checkpoint else None)  # Slurm's TERM may follow
        _write_counts({**counts, reason: counts.get(reason, 0) + 1})
        result = run_command(["scontrol", "requeue", job_id], timeout_s=30.0)
        if not result.ok:
            problem = " ".join((result.stderr or result.stdout).split()) or f"exit code {result.returncode}"
            _say(f"slurmml: Slurm refused to requeue {job_id}: {problem}; the job runs on to its limit")
            _write_counts(counts)
            client.record_requeue_refused(reason, problem)
            return False
        _state.requeued = reason
        return True


# ---------------------------------------------------------------- internals


def _slurm_view() -> tuple[str, dict[str, str]]:
    """Why the warning came, and Slurm's fields about this job: one `scontrol show job` per warning."""
    from slurmml.slurm.commands import run_command
    from slurmml.slurm.parse import parse_scontrol_job

    if _state.slurm_view is None:
        job_id = job_id_from_environment(os.environ, default="")
        fields: dict[str, str] = {}
        if job_id:
            shown = run_command(["scontrol", "show", "job", job_id], timeout_s=30.0)
            fields = parse_scontrol_job(shown.stdout) if shown.ok else {}
        _state.slurm_view = rules.why_warned(fields, _state.warned_at or time.time(), _signal_delay_s()), fields
    return _state.slurm_view


def _time_to_stop() -> bool:
    """Whether this checkpoint point is the one that saves and requeues; the same answer on every rank. Once
    the warning came, rank 0 asks Slurm when to stop (core.requeue.stop_at) and tells the others."""
    if not agree(_state.warned.is_set()):
        return False
    if _state.stop_at is None:
        at = 0.0
        if client.rank() == 0:
            _say("slurmml: Slurm's warning signal came; saving and requeueing at a checkpoint point")
            reason, fields = _slurm_view()
            at = rules.stop_at(reason, fields, _state.warned_at or time.time(), _signal_delay_s())
            if at > time.time() + 1:
                _say(f"slurmml: time limit near; training on for {at - time.time():.0f} s, then saving and "
                     f"requeueing")
        _state.stop_at = value_from_rank_zero(at)
    return agree(time.time() >= _state.stop_at)


def _on_warning(signum: int, frame: Any) -> None:
    if _state.warned.is_set():
        return
    _state.warned_at = time.time()
    _state.warned.set()
    if client.rank() != 0:
        return
    delay = rules.watchdog_delay_s(_signal_delay_s(), _state.cooperative)
    timer = threading.Timer(delay, _watchdog)  # no subprocess, no print inside the handler itself
    timer.daemon = True
    timer.start()


def _watchdog() -> None:
    if _state.requeued or not _state.warned.is_set():
        return
    grace = rules.watchdog_delay_s(_signal_delay_s(), True) / 1.5  # half the lead past the planned stop
    if _state.cooperative and _state.stop_at is not None and time.time() < _state.stop_at + grace:
        timer = threading.Timer(_state.stop_at + grace - time.time(), _watchdog)  # training on, as planned
        timer.daemon = True
        timer.start()
        return
    if _state.cooperative:
        _say("slurmml: no checkpoint point came in time; requeueing without a save")
    requeue_now()


def _opt_in() -> None:
    _state.cooperative = True
    install()  # a plain script under sbatch has no job wrapper to do it


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _max_num_timeout() -> int:
    return _int_env(MAX_NUM_TIMEOUT_ENV, 0)


def _signal_delay_s() -> int:
    return _int_env(SIGNAL_DELAY_ENV, 120)


def counts_path(spool: Union[str, os.PathLike]) -> Path:
    """Next to the run's spool, which outlives its executions: how many requeues of each kind it used."""
    spool = Path(spool)
    return spool.with_name(spool.stem + ".requeues.json")


def _counts_path() -> Path:
    # the job wrapper sets SLURMML_SPOOL before anything slow, so a warning that comes before the task started counts
    return counts_path(os.environ.get(SPOOL_ENV) or client.run.spool)


def _read_counts() -> dict[str, int]:
    try:
        counts = json.loads(_counts_path().read_text())
        return {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}


def _write_counts(counts: dict[str, int]) -> None:
    path = _counts_path()
    temp = path.with_name(path.name + ".tmp")
    try:
        temp.write_text(json.dumps(counts))
        os.replace(temp, path)
    except OSError as error:  # counting is lost, the requeue is not: max_num_timeout then counts from 0
        _say(f"slurmml: cannot record the requeue count in {path}: {error.strerror or error}")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _reset() -> None:
    """Forget signals and requeues (tests that run several tasks in one process)."""
    global _state
    _state = _State()
