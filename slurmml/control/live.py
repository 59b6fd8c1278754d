"""Send live controls to running jobs and wait for their answers: `slurmml set / snapshot / stop`, the TUI's
control dialog, and the early-stopping rounds' graceful stops.

A command is checked (core.controls.refusal, and its values against the run's config), recorded in the registry
as pending, then appended as one line to the run's control file, which the job reads (tracking/controls.py). The
job's answer comes back through its spool and the ordinary ingest. No Slurm call: the shared filesystem is the one
channel login and compute nodes are sure to share. docs/control.md has the story.
"""

from __future__ import annotations

import getpass
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from slurmml.core.config import flatten
from slurmml.core.controls import (
    APPLIED, DEFAULT_TIMEOUT_S, EXPIRED, PENDING, REFUSED, TIMED_OUT, command_line, refusal, type_problems,
)
from slurmml.errors import SlurmmlError

WAIT_TICK_S = 0.25


@dataclass(frozen=True)
class Sent:
    """What became of one command: ok (sent, or answered applied) and one line to show as it is."""

    run_id: str
    ok: bool
    message: str
    control_id: Optional[str] = None
    status: Optional[str] = None
    step: Optional[int] = None


def controls_file(spool_path: str) -> Path:
    from slurmml.tracking.controls import controls_path

    return controls_path(spool_path)


def send(registry: Any, run_id: str, kind: str, args: Optional[dict[str, Any]] = None, *, source: str = "cli",
         me: Optional[str] = None, timeout_s: float = DEFAULT_TIMEOUT_S, now: Optional[float] = None) -> Sent:
    """Check, record and write one command to one run. Refusals are a Sent with ok False, never an exception."""
    args = dict(args or {})
    me = me or getpass.getuser()
    try:
        registry.ingest_one(run_id)  # its state must be current: an ended run is refused here
        run = registry.run_with_sweep(run_id)
    except SlurmmlError as error:
        return Sent(run_id, False, str(error))
    why = refusal(kind, run, run.get("owner"), me) or _foreign_spool(run)
    if why is None and kind == "set":
        problems = type_problems(args.get("values") or {}, dict(flatten(registry.run_config(run_id))))
        why = f"run {run_id}: {problems[0]}" if problems else None
    if why:
        return Sent(run_id, False, why)
    asked = time.time() if now is None else now
    control_id = uuid.uuid4().hex[:16]
    registry.add_control(run_id, control_id, kind, args, me, source, asked, asked + timeout_s)
    path = controls_file(run["spool_path"])
    try:
        _append(path, command_line(control_id, kind, args, asked, me))
    except OSError as error:
        message = f"run {run_id}: cannot write its control file {path}: {error.strerror or error}"
        registry.refuse_control(control_id, message, time.time())
        return Sent(run_id, False, message, control_id, REFUSED)
    return Sent(run_id, True, f"sent {kind} to run {run_id}", control_id, PENDING)


def wait(registry: Any, sent: list[Sent], timeout_s: float, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.time) -> list[Sent]:
    """Wait until every sent command is answered, its run ended, or `timeout_s` passed; each one's outcome."""
    pending = {s.control_id: s for s in sent if s.ok and s.control_id}
    deadline = clock() + timeout_s
    answered: dict[str, dict[str, Any]] = {}
    while True:
        for item in pending.values():
            if item.control_id not in answered:
                registry.ingest_one(item.run_id)
        for row in registry.controls(pending):
            if row["shown"] != PENDING:
                answered[row["id"]] = row
        if len(answered) == len(pending) or clock() >= deadline:
            break
        sleep(WAIT_TICK_S)
    rows = {row["id"]: row for row in registry.controls(pending)}
    return [outcome(s, answered.get(s.control_id) or rows.get(s.control_id), timeout_s) if s.control_id in pending
            else s for s in sent]


def outcome(item: Sent, row: Optional[dict[str, Any]], timeout_s: float) -> Sent:
    """One line for a command's end: applied at a step, refused with the job's reason, or no answer."""
    if row is None:
        return item
    run_id, what, status = item.run_id, row["what"], row["shown"]
    took = f" ({row['answered'] - row['asked']:.1f} s)" if row.get("answered") and row.get("asked") else ""
    if status == APPLIED:
        detail = f": {row['message']}" if row.get("message") else ""
        return Sent(run_id, True, f"run {run_id}: {what} applied at step {row['step']}{took}{detail}",
                    item.control_id, status, row["step"])
    if status == REFUSED:
        return Sent(run_id, False, f"run {run_id}: {what} refused: {row['message']}", item.control_id, status)
    if status == EXPIRED:
        return Sent(run_id, False, f"run {run_id} ended ({row['run_state']}) before it read {what}", item.control_id,
                    status)
    return Sent(run_id, False, f"run {run_id}: no answer to {what} within {timeout_s:g} s (the job reads its "
                               f"controls at its checkpoint points, or at slurmml.log(step=...) without them)",
                item.control_id, TIMED_OUT)


def _foreign_spool(run: dict[str, Any]) -> Optional[str]:
    """A run folder this user cannot write to belongs to someone else, whatever the registry says."""
    folder = Path(run["spool_path"]).parent
    try:
        owner = folder.stat().st_uid
    except OSError:
        return f"run {run['id']}: its folder {folder} cannot be reached from this machine"
    if hasattr(os, "getuid") and owner != os.getuid():
        return f"run {run['id']} belongs to another user (its folder {folder}); slurmml controls only your own runs"
    return None


def _append(path: Path, line: str) -> None:
    """One write on an O_APPEND descriptor under an exclusive lock: two senders never interleave a line."""
    import fcntl

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line.encode())
    finally:
        os.close(fd)
