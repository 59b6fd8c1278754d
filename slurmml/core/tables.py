"""How a table fits the terminal: the layout rules the CLI's tables follow (slurmml/cli/terminal.py prints them).

`fit` keeps ids, states and numbers whole and drops the least important columns until the rest fits the
width, so no column is ever squeezed into "COMPLET…"; only free text (overrides, errors, paths) folds onto
more lines. A table names its columns with priorities, so a new column is one more
`Column(key, priority=...)`. --json and --csv never come through here: they keep every field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

GAP = 2  # columns are two spaces apart (the compact style below)
WRAP_MIN = 16  # the narrowest a free-text column gets...
WORD_MAX = 24  # ...or as wide as its longest word of up to this, so a run id or an override is not split
_NUMERIC = re.compile(r"[-+]?(\d[\d,]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?|\d+(:\d\d)+")


@dataclass(frozen=True)
class Column:
    """One column: `key` names the field in each row; `header` is shown instead when given.

    priority 0 is always shown; the others are shown from the lowest number up (the leftmost of equals)
    while they fit. `wrap`: free text that may fold onto more lines; every other column keeps its
    cells whole.
    """

    key: str
    header: str = ""
    priority: int = 0
    wrap: bool = False

    @property
    def title(self) -> str:
        return self.header or self.key


@dataclass(frozen=True)
class Layout:
    columns: list[Column]
    widths: list[int]
    hidden: list[Column] = field(default_factory=list)


def cell(value: Any) -> str:
    """A cell's text: short numbers, blanks for unknown (JSON and CSV keep full values)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.splitlines()), default=0)


def _longest_word(text: str) -> int:
    return max((_width(word) for word in text.split()), default=0)


def fit(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> Layout:
    """Which columns to show at `width` and how wide each is; rows hold each column's cell text."""
    natural = [max([_width(c.title)] + [_width(row[i]) for row in rows]) for i, c in enumerate(columns)]
    least = [min(natural[i], max([WRAP_MIN] + [_longest_word(row[i]) for row in rows
                                               if _longest_word(row[i]) <= WORD_MAX]))
             if c.wrap else natural[i] for i, c in enumerate(columns)]

    def needed(kept: list[int]) -> int:
        return sum(least[i] for i in kept) + GAP * (len(kept) - 1)

    # every priority-0 column, then the others from the most important while they fit (one that does
    # not fit is skipped, a less important narrower one may still fit)
    kept = [i for i, c in enumerate(columns) if c.priority == 0]
    for i in sorted((i for i, c in enumerate(columns) if c.priority > 0), key=lambda i: (columns[i].priority, i)):
        if needed(sorted(kept + [i])) <= width:
            kept = sorted(kept + [i])
    widths = {i: least[i] for i in kept}
    spare = width - needed(kept)
    growing = [i for i in kept if widths[i] < natural[i]]
    while spare > 0 and growing:  # free text takes what is left, a character at a time in turn
        for i in list(growing):
            if spare == 0:
                break
            widths[i] += 1
            spare -= 1
            if widths[i] == natural[i]:
                growing.remove(i)
    return Layout([columns[i] for i in kept], [widths[i] for i in kept],
                  [c for i, c in enumerate(columns) if i not in kept])


def numeric_column(cells: Iterable[str]) -> bool:
    """Whether a column's cells are all numbers (blanks and `-` aside): such a column is right-aligned."""
    cells = [c for c in cells if c not in ("", "-")]
    return bool(cells) and all(_NUMERIC.fullmatch(c.rstrip("*")) for c in cells)


GLUE = "\u00a0"  # between two words that print_text keeps on one line: "TIMEOUT 1", never "TIMEOUT" / "1"


def compact_duration(seconds: Optional[float]) -> str:
    """`4:05`, `2h07m`, `3d04h`: a duration in a table cell (CLI and TUI); empty when unknown."""
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}:{seconds % 60:02d}"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def size_text(n: Optional[float]) -> str:
    """Bytes for people: 512 B, 3.4 KB, 12 MB, 1.2 GB (powers of 1000, as disks and S3 consoles count); '' for None."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} TB"
