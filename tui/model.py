"""What the TUI shows, as plain data: run rows, columns, filtering, sorting, grouping, labels.

Pure functions only (no textual, no SQLite) so every rule here is unit-tested on its own.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

from slurmml.core.controls import parse_assignments
from slurmml.core.states import ACTIVE_STATES, FINAL_STATES, is_failed
from slurmml.core.tables import compact_duration as format_duration  # one format for the CLI and the TUI

# a filter token that compares (lr<0.01, model=mlp, val_acc>=0.9) rather than searching text
_EXPRESSION = re.compile(r"^[A-Za-z_][\w.\-/]*\s*(<=|>=|!=|==|=|<|>)\s*\S")
_UNFINISHED = re.compile(r"^[A-Za-z_][\w.\-/]*(<=|>=|!=|==|=|<|>|!)$")
# a KEY=VALUE word of the set dialog: whitespace splits words, except inside quotes ('a b' stays one value)
_ASSIGNMENT_WORD = re.compile(r"""(?:'[^']*'|"[^"]*"|\S)+""")
MARK_LABEL_CHARS = 24


@dataclass
class RunRow:
    run_id: str
    sweep_id: str
    job_num: Optional[int]
    state: str
    slurm_job_id: str = ""
    host: str = ""
    created: Optional[float] = None
    started: Optional[float] = None
    ended: Optional[float] = None
    restarts: int = 0
    overrides: str = ""
    owner: str = ""
    parent_id: str = ""
    metrics: dict[str, tuple[Optional[float], Optional[float]]] = field(default_factory=dict)  # name -> (last, best)
    gpu_util: Optional[float] = None  # mean over the run's GPUs of the latest sample (running runs only)
    result: Optional[float] = None  # the task's numeric return value
    haystack: str = ""  # what a text filter searches, lower case, built once

    def __post_init__(self) -> None:
        if not self.haystack:
            self.haystack = " ".join(str(v) for v in (self.run_id, self.sweep_id, self.state, self.slurm_job_id,
                                                      self.host, self.overrides, self.owner) if v).lower()

    def elapsed(self, now: float) -> Optional[float]:
        if self.started is None:
            return None
        end = self.ended if self.ended is not None else (now if self.state not in FINAL_STATES else None)
        return None if end is None else max(0.0, end - self.started)


@dataclass(frozen=True)
class Column:
    key: str  # 'state', 'elapsed', ... or 'metric:<name>'
    title: str
    width: int
    align: str = "left"

    @property
    def metric(self) -> Optional[str]:
        return self.key[7:] if self.key.startswith("metric:") else None


BASE_COLUMNS = (
    ("mark", " ", 1),
    ("run_id", "run", 24),
    ("state", "state", 13),
    ("slurm_job_id", "job", 10),
    ("elapsed", "elapsed", 8),
    ("gpu", "gpu", 5),
    ("overrides", "overrides", 30),
)


def columns_for(rows: Sequence[RunRow], metrics: Sequence[str]) -> list[Column]:
    """Fixed columns sized to their content (within limits), then one per metric: 'last (best)'."""
    widths = {"run_id": (8, 32), "overrides": (9, 32), "slurm_job_id": (3, 14), "state": (5, 16)}
    out = []
    for key, title, width in BASE_COLUMNS:
        if key in widths:
            low, high = widths[key]
            longest = max((len(_state_text(r) if key == "state" else str(getattr(r, key) or "")) for r in rows), default=0)
            width = max(low, min(high, longest), len(title))
        align = "right" if key in ("elapsed", "gpu") else "left"
        out.append(Column(key, title, width, align))
    if any(r.result is not None for r in rows):
        out.append(Column("result", "result", 10, "right"))
    for name in metrics:
        out.append(Column(f"metric:{name}", name, max(15, len(name) + 2), "right"))
    return out


# -- formatting ---------------------------------------------------------------------------------------
def format_number(value: Optional[float]) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.2e}"


def format_age(seconds: Optional[float]) -> str:
    """'5 s ago' for status lines: how old the Slurm view is, so stale data never looks fresh."""
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{int(seconds)} s ago"
    return f"{int(seconds // 60)} min ago"


def cell_text(row: RunRow, column: Column, now: float, marked: bool = False) -> str:
    key = column.key
    if key == "mark":
        return "●" if marked else " "
    if key == "elapsed":
        return format_duration(row.elapsed(now))
    if key == "gpu":
        return "" if row.gpu_util is None else f"{row.gpu_util:.0f}%"
    if key == "state":
        return _state_text(row)
    if key == "result":
        return format_number(row.result)
    metric = column.metric
    if metric is not None:
        last, best = row.metrics.get(metric, (None, None))
        if last is None:
            return ""
        text = format_number(last)
        return text if best is None or best == last else f"{text} ({format_number(best)})"
    value = getattr(row, key, "")
    return "" if value is None else str(value)


def _state_text(row: RunRow) -> str:
    return f"{row.state}↻{row.restarts}" if row.restarts else row.state


# -- filtering ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FilterQuery:
    words: tuple[str, ...] = ()  # plain text: every word must appear (case-insensitive)
    expressions: tuple[str, ...] = ()  # 'lr<0.01', 'state=RUNNING': answered by the registry

    @property
    def empty(self) -> bool:
        return not self.words and not self.expressions


def parse_filter_text(text: str) -> FilterQuery:
    """`mlp failed lr<0.01` -> words ('mlp', 'failed') and expressions ('lr<0.01',); spaces around the
    operator are allowed (`lr < 0.01`)."""
    text = re.sub(r"\s*(<=|>=|!=|==|=|<|>)\s*", r"\1", text.strip())
    words, expressions = [], []
    for token in text.split():
        if _UNFINISHED.match(token):
            continue  # 'lr<' while the value is still being typed: neither a word nor a comparison yet
        if _EXPRESSION.match(token):
            expressions.append(token)
        else:
            words.append(token.lower())
    return FilterQuery(tuple(words), tuple(expressions))


def apply_filter(rows: Iterable[RunRow], query: FilterQuery, allowed_ids: Optional[set[str]] = None) -> list[RunRow]:
    """Rows whose text has every word and (if the query has expressions) whose id is in allowed_ids."""
    out = []
    words = query.words
    for row in rows:
        if allowed_ids is not None and row.run_id not in allowed_ids:
            continue
        if words and not all(w in row.haystack for w in words):
            continue
        out.append(row)
    return out


# -- sorting and grouping -----------------------------------------------------------------------------
def sort_key(column: str, now: float) -> Callable[[RunRow], tuple]:
    """Missing values sort last in either direction (the caller reverses only the present ones)."""
    if column.startswith("metric:"):
        name = column[7:]
        return lambda r: _present(r.metrics.get(name, (None, None))[0])
    if column == "elapsed":
        return lambda r: _present(r.elapsed(now))
    if column == "gpu":
        return lambda r: _present(r.gpu_util)
    if column == "result":
        return lambda r: _present(r.result)
    if column in ("job_num", "restarts", "started", "ended", "created"):
        return lambda r: _present(getattr(r, column))
    if column == "run_id":
        return lambda r: (r.sweep_id, r.job_num if r.job_num is not None else -1, r.run_id)
    return lambda r: (str(getattr(r, column, "") or "").lower(),)


def _present(value: Any) -> tuple:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (1, 0.0)
    return (0, value)


def sort_rows(rows: list[RunRow], column: Optional[str], descending: bool, now: float) -> list[RunRow]:
    if not column or column == "mark":
        return list(rows)
    key = sort_key(column, now)
    if not descending:
        return sorted(rows, key=key)
    present = [r for r in rows if key(r)[0] == 0]
    missing = [r for r in rows if key(r)[0] != 0]
    return sorted(present, key=key, reverse=True) + missing


@dataclass(frozen=True)
class GroupLine:
    """A sweep's heading when runs are grouped by sweep."""

    sweep_id: str
    text: str


def group_by_sweep(rows: list[RunRow], sweep_names: dict[str, str]) -> list[Any]:
    """Sorted rows -> a heading per sweep followed by its rows (sweeps in order of first appearance)."""
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.sweep_id, []).append(row)
    out: list[Any] = []
    for sweep_id, members in groups.items():
        counts = state_counts(members)
        summary = ", ".join(f"{n} {state.lower()}" for state, n in counts.items())
        name = sweep_names.get(sweep_id) or ""
        title = sweep_id or "local runs"
        out.append(GroupLine(sweep_id, f"▼ {title}{'  ' + name if name else ''}  ({len(members)} runs: {summary})"))
        out.extend(members)
    return out


def first_stream(state: str, sizes: dict[str, int]) -> str:
    """The stream a run's Logs tab opens on. stdout is where a program talks to its user, so it comes
    first; stderr when it is the only stream with anything in it, or when the run failed and stderr has
    something (that is where the traceback is). A healthy run's stderr is mostly warnings and noise."""
    if sizes.get("stderr") and (is_failed(state) or not sizes.get("stdout")):
        return "stderr"
    return "stdout"


def state_counts(rows: Iterable[RunRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    order = {s: i for i, s in enumerate(ACTIVE_STATES + FINAL_STATES)}
    return dict(sorted(counts.items(), key=lambda kv: order.get(kv[0], 99)))


# -- comparing runs ----------------------------------------------------------------------------------
def distinguishing_overrides(overrides: Sequence[Sequence[str]]) -> list[str]:
    """A legend label per run: only the overrides that are not the same in every compared run."""
    common = set(overrides[0]).intersection(*map(set, overrides[1:])) if overrides else set()
    labels = []
    for items in overrides:
        label = " ".join(o for o in items if o not in common)
        labels.append(label or "(same overrides)")
    return labels


def differing_keys(configs: Sequence[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Flattened config keys whose values are not the same in every run (missing counts as different)."""
    keys = sorted(set().union(*(c.keys() for c in configs))) if configs else []
    missing = object()
    out = []
    for key in keys:
        values = [c.get(key, missing) for c in configs]
        if any(v != values[0] for v in values[1:]):
            out.append((key, [None if v is missing else v for v in values]))
    return out



# -- live controls -------------------------------------------------------------------------------------
def parse_set_text(text: str) -> dict[str, Any]:
    """What the set dialog's user typed (`optimizer.lr=0.001 name='a b'`) -> the values to send; ValueError in
    one line. Quotes stay on the words, so a quoted value is read as a string (core.controls.parse_value)."""
    return parse_assignments(_ASSIGNMENT_WORD.findall(text))


def plot_marks(marks: Iterable[tuple[int, str]], max_chars: int = MARK_LABEL_CHARS) -> list[tuple[int, str]]:
    """(step, what changed) of applied controls -> one short label per step, in step order, for a metric plot:
    `set ` is left out (a plot's marks are mostly sets), changes at the same step share a label."""
    by_step: dict[int, list[str]] = {}
    for step, what in marks:
        by_step.setdefault(step, []).append(what[4:] if what.startswith("set ") else what)
    labels = []
    for step in sorted(by_step):
        label = ", ".join(by_step[step])
        labels.append((step, label if len(label) <= max_chars else label[: max_chars - 1] + "…"))
    return labels
