"""Pure parsing of run filters and sort keys (`lr<0.01`, `model=mlp`, `-val_acc`) into parameterized SQL."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from slurmml.errors import SlurmmlError

_FILTER = re.compile(r"^\s*([A-Za-z_][\w.\-/]*)\s*(<=|>=|!=|==|=|<|>)\s*(.+?)\s*$")
RUN_COLUMNS = {"state", "host", "job_num", "slurm_job_id", "exit_code", "sweep_id", "id", "result"}
TEXT_RUN_COLUMNS = {"state", "host", "slurm_job_id", "sweep_id", "id"}  # '5745' and '100_2' are ids, not numbers
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.I)


@dataclass(frozen=True)
class Filter:
    key: str
    op: str
    value: Any  # float for numbers, str otherwise


def parse_filter(text: str) -> Filter:
    match = _FILTER.match(text)
    if not match:
        raise SlurmmlError(f"cannot read filter {text!r}: write KEY OP VALUE, e.g. 'lr<0.01' or 'model=mlp'")
    key, op, raw = match.groups()
    op = "=" if op == "==" else op
    raw = raw.strip("'\"")
    if key in TEXT_RUN_COLUMNS:
        return Filter(key, op, raw)
    if _NUMBER.match(raw):  # not float() alone: it also reads '100_2' as 1002
        return Filter(key, op, float(raw))
    if op not in ("=", "!="):
        raise SlurmmlError(f"filter {text!r} compares with {op} but {raw!r} is not a number")
    return Filter(key, op, raw)


def key_sql(column: str, key: str) -> tuple[str, list[Any]]:
    """SQL matching a config key by its name or as a dotted suffix (`lr` matches `optimizer.lr`). No LIKE:
    `_` and `%` in names such as `val_loss` are letters, not wildcards."""
    return f"({column} = ? OR substr({column}, ?) = ?)", [key, -(len(key) + 1), f".{key}"]


def filter_sql(f: Filter, metric_names: set[str]) -> tuple[str, list[Any]]:
    """SQL condition on runs `r`: a run column, a metric (its last value) or a config key (exact or dotted suffix)."""
    if f.key in RUN_COLUMNS:
        return f"r.{f.key} {f.op} ?", [f.value]
    if f.key in metric_names:
        return (f"EXISTS (SELECT 1 FROM metric_summary s JOIN metric_keys k USING (key) "
                f"WHERE s.run = r.run AND k.name = ? AND s.last {f.op} ?)", [f.key, f.value])
    column, value = ("p.num", f.value) if isinstance(f.value, float) else ("p.value", json.dumps(f.value))
    match, args = key_sql("p.key", f.key)
    return f"EXISTS (SELECT 1 FROM params p WHERE p.run = r.run AND {match} AND {column} {f.op} ?)", [*args, value]


def filters_sql(texts: Iterable[str], metric_names: set[str]) -> tuple[list[str], list[Any]]:
    """Each filter text parsed into one SQL condition on runs `r`, with the values to bind."""
    conditions: list[str] = []
    args: list[Any] = []
    for text in texts:
        sql, values = filter_sql(parse_filter(text), metric_names)
        conditions.append(sql)
        args.extend(values)
    return conditions, args


def parse_sort(text: str) -> tuple[str, Optional[bool]]:
    """`-val_acc` -> ('val_acc', descending=True), `+val_acc` -> False, `val_acc` -> None (the caller's default:
    best first for a metric or the result, ascending otherwise)."""
    descending = True if text.startswith("-") else False if text.startswith("+") else None
    key = text.lstrip("+-")
    if not key:
        raise SlurmmlError(f"cannot sort by {text!r}")
    return key, descending


def downsample(points: list[tuple[Any, float]], max_points: int) -> list[tuple[Any, float]]:
    """At most max_points, evenly spread, always keeping the first and the last point."""
    if len(points) <= max_points or max_points < 2:
        return points
    stride = (len(points) - 1) / (max_points - 1)
    return [points[round(i * stride)] for i in range(max_points)]
