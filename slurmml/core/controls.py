"""Live controls of a running job (`slurmml set / snapshot / stop`): what a command is, what may be sent, and
how its answer reads. Pure: the login node's sender (slurmml.control.live), the job's reader
(slurmml.tracking.controls), the registry and the views share these rules.

A command is one JSON line the login node appends to the run's control file; the job answers with a
`control` spool record (applied or refused, and the step it took effect at). docs/control.md has the story.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping, Optional

from slurmml.core.states import is_final

KINDS = ("set", "snapshot", "stop")
APPLIED, REFUSED, PENDING = "applied", "refused", "pending"
# what a command that got no answer is shown as: the run ended before it read it, or it did not answer in time
EXPIRED, TIMED_OUT = "expired", "timed out"
DEFAULT_TIMEOUT_S = 120.0

_KEY = re.compile(r"^[A-Za-z_][\w\-]*(\.[\w\-]+)*$")
_BARE_WORD = re.compile(r"^[\w.\-+/:@]+$")


def parse_value(text: str) -> Any:
    """A value as a command line writes it, read the way Hydra reads an override: `0.001` is a float, `8` an int,
    `true`/`false`/`null` what they say, `[1,2]` a list, `'x'` or `"x"` a string; any other bare word is a string.
    Raises ValueError for what is none of these (an unclosed quote or bracket, an empty value)."""
    text = text.strip()
    if not text:
        raise ValueError("the value is empty")
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    for number in (int, float):
        try:
            value = number(text)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number")
        return value
    if text[0] in "'\"":
        if len(text) < 2 or text[-1] != text[0]:
            raise ValueError(f"{text} has no closing quote")
        return text[1:-1]
    if text[0] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"{text} is not a list or mapping (write it as JSON, e.g. [1, 2])") from None
    if not _BARE_WORD.match(text):
        raise ValueError(f"{text!r} is not a value (quote a string that has spaces or brackets)")
    return text


def parse_assignments(words: list[str]) -> dict[str, Any]:
    """`["optimizer.lr=0.001", "dropout=0.2"]` -> {"optimizer.lr": 0.001, "dropout": 0.2}; ValueError in one line."""
    if not words:
        raise ValueError("give at least one KEY=VALUE, e.g. optimizer.lr=0.001")
    values: dict[str, Any] = {}
    for word in words:
        key, sep, text = word.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"{word!r}: expected KEY=VALUE, e.g. optimizer.lr=0.001")
        if not _KEY.match(key):
            raise ValueError(f"{word!r}: {key!r} is not a key (dotted names: optimizer.lr)")
        try:
            values[key] = parse_value(text)
        except ValueError as error:
            raise ValueError(f"{word!r}: {error}") from None
    return values


def type_problems(values: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Values whose type cannot stand for what the run's config has at that key: a number for a number (an int
    for a float is fine), a bool for a bool. Keys the config lacks are left to the job, which knows its callbacks."""
    problems = []
    for key, value in values.items():
        if key not in config or config[key] is None or value is None:
            continue
        old = config[key]
        if isinstance(old, bool):
            if not isinstance(value, bool):
                problems.append(f"{key} is a bool in the run's config ({old}); {value!r} is not true or false")
        elif isinstance(old, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"{key} is a number in the run's config ({old}); {value!r} is not a number")
    return problems


def refusal(kind: str, run: Mapping[str, Any], owner: Optional[str], me: str) -> Optional[str]:
    """Why a control may not be sent to `run` (a registry row: id, state, spool_path, and synced when it came
    from another machine), or None."""
    if kind not in KINDS:
        raise ValueError(f"unknown control {kind!r} (one of {', '.join(KINDS)})")
    run_id, state = run.get("id"), run.get("state")
    if owner is not None and owner != me:
        return f"run {run_id} belongs to {owner}; slurmml controls only your own runs"
    if run.get("synced"):
        return (f"run {run_id} runs on another machine (it reaches this one through the object store); "
                f"controls reach only runs whose folder this machine shares")
    if not run.get("spool_path"):
        return f"run {run_id} has no run folder yet; nothing to {kind}"
    if is_final(state or ""):
        return f"run {run_id} has already ended ({state}); nothing to {kind}"
    return None


def describe(kind: str, args: Mapping[str, Any]) -> str:
    """A command in a few words, as history and the CLI show it: `set optimizer.lr=0.001`, `snapshot`, `stop`."""
    if kind == "set":
        return "set " + " ".join(f"{key}={json.dumps(value)}" for key, value in (args.get("values") or {}).items())
    if kind == "stop" and args.get("state") == "PRUNED":
        return "stop (pruned)"
    return kind


def shown_status(status: str, deadline: Optional[float], run_final: bool, now: float) -> str:
    """A command's status as views show it: applied or refused as the job said; a pending one is `expired` when
    the run ended without answering, `timed out` past its deadline, else `pending`."""
    if status != PENDING:
        return status
    if run_final:
        return EXPIRED
    if deadline is not None and now > deadline:
        return TIMED_OUT
    return PENDING


def command_line(control_id: str, kind: str, args: Mapping[str, Any], asked: float, user: str) -> str:
    """The line appended to a run's control file: one JSON object, newline-terminated."""
    record = {"id": control_id, "kind": kind, "t": asked, "user": user, **args}
    return json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"


def parse_command(line: bytes) -> Optional[dict[str, Any]]:
    """A command line read back in the job, or None when it is not one (a stray or damaged line is skipped)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("kind") not in KINDS or not isinstance(record.get("id"), str):
        return None
    if record["kind"] == "set" and not isinstance(record.get("values"), dict):
        return None
    return record
