"""Live control inside the job: `slurmml.on_set(key, callback)`, the reader of the run's control file, and the
points where commands take effect (docs/control.md).

    slurmml.on_set("optimizer.lr", lambda lr: [group.update(lr=lr) for group in optimizer.param_groups])

The login node appends commands (slurmml.core.controls) to `<spool>.controls.jsonl`; rank 0 reads it from a daemon
thread every SLURMML_CONTROL_INTERVAL_S seconds (5 by default) with open() and read(), which on NFS sees the file's
latest closed version where a stat()-only poller can lag for a minute. Reading only queues: `slurmml.log` stays one
append. Commands take effect on the training thread at the task's next control point:

- `slurmml.checkpoint_point(step, ...)`: every command; with torch.distributed, rank 0 sends them to every rank, so
  all ranks apply them at the same step. `snapshot` saves a checkpoint of the objects given there; `stop` saves one,
  then every rank raises Stopped and the run ends STOPPED (or PRUNED, when the sweep's early-stopping rule sent it).
- `slurmml.log(step=...)` in a task that never calls a checkpoint point (one process only): `set` and `stop`; a
  `snapshot` is refused there, as nothing says what to save.

Every command is answered in the spool by a `control` record: applied at a step, or refused with the reason (a key
with no callback, a callback that raised). How far the file was answered is kept next to the spool, so a requeued
execution never applies a command twice.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional, Union

from slurmml.core.controls import APPLIED, REFUSED, parse_command

INTERVAL_ENV = "SLURMML_CONTROL_INTERVAL_S"
DEFAULT_INTERVAL_S = 5.0
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.2, 300.0
READ_LIMIT = 1024 * 1024  # bytes per read: commands are small lines

__all__ = ["on_set", "Stopped", "controls_path"]


class Stopped(SystemExit):
    """Raised on every rank when a `stop` took effect (its checkpoint saved first): it unwinds the training code
    (an `except Exception` there does not catch it) and ends the process with exit code 0; the run ends `state`."""

    def __init__(self, state: str, reason: str) -> None:
        super().__init__(0)
        self.state, self.reason = state, reason


def controls_path(spool: Union[str, os.PathLike]) -> Path:
    """The run's control file, next to its spool: written only by the login node, read by the job."""
    spool = Path(spool)
    return spool.with_name(spool.stem + ".controls.jsonl")


def answered_path(spool: Union[str, os.PathLike]) -> Path:
    """How many bytes of the control file the job has answered (written by the job only): survives a requeue."""
    spool = Path(spool)
    return spool.with_name(spool.stem + ".controls.done")


_callbacks: dict[str, Callable[[Any], Any]] = {}
_queue: deque = deque()  # (command, end offset) read and not yet applied; appended by the reader thread only
_stopped: Optional[Stopped] = None  # the stop that ended this run: end_run records its state
at_checkpoints = False  # the task calls checkpoint points: commands wait for them, not for slurmml.log
# the run's spool writer, as slurmml.tracking.client gives it (set there: this module imports no client)
writer: Callable[[], Any] = lambda: None


def on_set(key: str, callback: Callable[[Any], Any]) -> None:
    """Let `slurmml set RUN key=value` change `key` while the task runs: `callback(value)` applies it (on every rank,
    at the same step). A callback that raises refuses the value; the refusal, with its message, reaches the sender."""
    if not callable(callback):
        raise TypeError(f"slurmml.on_set: the callback for {key!r} must be callable")
    _callbacks[str(key)] = callback


def exposed_keys() -> list[str]:
    return sorted(_callbacks)


def stopped() -> Optional[Stopped]:
    return _stopped


# ---------------------------------------------------------------- the reader (rank 0)


class Reader:
    """Reads new whole lines of the control file every `interval_s` from a daemon thread and queues them."""

    def __init__(self, spool: Union[str, os.PathLike], interval_s: Optional[float] = None) -> None:
        self.path = controls_path(spool)
        self.answered = answered_path(spool)
        self.interval_s = interval_s if interval_s is not None else interval_from_environment()
        self.offset = read_answered(self.answered)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slurmml-controls", daemon=True)

    def start(self) -> "Reader":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            self.read_once()  # at once first: a command sent while the job was queued takes effect at its first point
            if self._stop.wait(self.interval_s):
                return

    def read_once(self) -> int:
        """Queue the commands appended since the last read; how many. A missing file is no command yet."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(READ_LIMIT)
        except OSError:
            return 0
        end = data.rfind(b"\n") + 1  # whole lines only: a line being appended waits for its rest
        queued = 0
        position = 0
        for line in data[:end].splitlines(keepends=True):
            position += len(line)
            command = parse_command(line)
            if command is not None:
                _queue.append((command, self.offset + position))
                queued += 1
        self.offset += end
        return queued


_reader: Optional[Reader] = None


def start_reading(spool: Union[str, os.PathLike]) -> Optional[Reader]:
    """Rank 0 of a run starts reading its control file (the job wrapper, or a plain script's first log)."""
    global _reader
    if _reader is not None:
        if _reader.path == controls_path(spool):
            return _reader
        _reader.stop()
    _queue.clear()
    _reader = Reader(spool).start()
    return _reader


def stop_reading() -> None:
    global _reader
    if _reader is not None:
        _reader.stop()
        _reader = None


def interval_from_environment() -> float:
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        value = DEFAULT_INTERVAL_S
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, value))


def read_answered(path: Path) -> int:
    try:
        return max(0, int(path.read_text().strip() or 0))
    except (OSError, ValueError):
        return 0


def _write_answered(offset: int) -> None:
    if _reader is None:
        return
    temp = _reader.answered.with_name(_reader.answered.name + ".tmp")
    try:
        temp.write_text(str(offset))
        os.replace(temp, _reader.answered)
    except OSError as error:  # a requeued execution may then answer a command again; the run goes on
        print(f"slurmml: cannot record the answered controls in {_reader.answered}: {error.strerror or error}",
              file=sys.stderr, flush=True)


# ---------------------------------------------------------------- control points (the training thread)


def take(step: Optional[int], save: Optional[Callable[[], Optional[Path]]] = None,
         distributed: Any = None) -> None:
    """Apply the queued commands at `step`. `save` writes a checkpoint (None: this point cannot save).
    `distributed`: torch.distributed when several ranks train; rank 0's commands then reach every rank."""
    commands = []
    while _queue:
        commands.append(_queue.popleft())
    if distributed is not None:
        commands = _from_rank_zero(distributed, commands)
    for command, end in commands:
        _apply(command, step, save)
        _flush()  # the answer is in the spool before the command counts as answered: a kill never loses it
        _write_answered(end)
        if _stopped is not None:
            raise _stopped


def take_at_log(step: Optional[int]) -> None:
    """`slurmml.log(step=...)` as the control point of a task that has no checkpoint points, in one process."""
    if step is None or at_checkpoints or _several_ranks():
        return
    take(step)


def _several_ranks() -> bool:
    from slurmml.tracking.ranks import distributed

    return distributed() is not None


def _from_rank_zero(dist: Any, commands: list) -> list:
    """Every rank gets rank 0's commands: a count first (one small broadcast at every control point), the commands
    themselves only when there are any."""
    from slurmml.tracking.ranks import value_from_rank_zero

    count = int(value_from_rank_zero(float(len(commands))))
    if count == 0:
        return []
    box = [commands if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return list(box[0])


def _apply(command: dict[str, Any], step: Optional[int], save: Optional[Callable[[], Optional[Path]]]) -> None:
    global _stopped
    kind = command["kind"]
    if kind == "set":
        _apply_values(command, step)
        return
    checkpoint = None
    if save is not None:
        try:
            checkpoint = save()
        except Exception as error:  # noqa: BLE001 - a failed save refuses the command, training goes on
            _answer(command, REFUSED, step, f"the checkpoint could not be saved: {_error_text(error)}")
            return
    elif kind == "snapshot":
        _answer(command, REFUSED, step, "this task saves no checkpoints (it calls no slurmml.checkpoint_point)")
        return
    if kind == "snapshot":
        _answer(command, APPLIED, step, f"saved {checkpoint}" if checkpoint else "saved", checkpoint=checkpoint)
        return
    state = str(command.get("state") or "STOPPED")
    reason = str(command.get("reason") or f"stopped by {command.get('user') or 'a user'} at step {step}")
    saved = f"; saved {checkpoint}" if checkpoint else ("; nothing saved (no checkpoint point)" if save is None else "")
    _answer(command, APPLIED, step, f"{reason}{saved}", checkpoint=checkpoint)
    _stopped = Stopped(state, reason)


def _apply_values(command: dict[str, Any], step: Optional[int]) -> None:
    values = command["values"]
    missing = [key for key in values if key not in _callbacks]
    if missing:
        exposed = ", ".join(exposed_keys()) or "nothing"
        _answer(command, REFUSED, step, f"this task has no callback for {', '.join(missing)} (it takes: {exposed}; "
                                        f"register one with slurmml.on_set)")
        return
    done = []
    for key, value in values.items():
        try:
            _callbacks[key](value)
        except Exception as error:  # noqa: BLE001 - the training code's refusal, reported back
            before = f" ({', '.join(done)} applied)" if done else ""
            _answer(command, REFUSED, step, f"{key}={value!r}: {_error_text(error)}{before}", values=values)
            return
        done.append(key)
    _answer(command, APPLIED, step, None, values=values)


def _answer(command: dict[str, Any], status: str, step: Optional[int], message: Optional[str],
            **extra: Any) -> None:
    record = {"k": "control", "t": time.time(), "id": command["id"], "kind": command["kind"], "status": status,
              "step": step, "message": message}
    record.update({name: str(value) if isinstance(value, Path) else value for name, value in extra.items()
                   if value is not None})
    writer().write(record)
    if status == REFUSED or command["kind"] != "set":
        print(f"slurmml: {command['kind']} {status} at step {step}" + (f": {message}" if message else ""),
              file=sys.stderr, flush=True)


def _flush() -> None:
    writer().flush()


def _error_text(error: BaseException) -> str:
    text = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _reset() -> None:
    """Forget callbacks, queued commands and the reader (tests that run several tasks in one process)."""
    global _stopped, at_checkpoints
    stop_reading()
    at_checkpoints = False
    _callbacks.clear()
    _queue.clear()
    _stopped = None
