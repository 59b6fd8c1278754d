"""Tables and key/value blocks for the terminal: the one place the CLI draws text.

`fit` is pure: it keeps ids, states and numbers whole and drops the least important columns until the
rest fits the width, so no column is ever squeezed into "COMPLET…"; only free text (overrides, errors,
paths) folds onto more lines. A table names its columns with priorities, so a new column is one more
`Column(key, priority=...)`. --json and --csv never come through here: they keep every field.

Everything drawn here is plain text (rich.text.Text), never parsed as Rich markup: overrides such as
`tags=[foo]` and errors such as `boom [/x]` come from users, configs and logs. Rich is imported inside
the functions, so commands that never draw a table do not load it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

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


def _numeric(cells: Iterable[str]) -> bool:
    cells = [c for c in cells if c not in ("", "-")]
    return bool(cells) and all(_NUMERIC.fullmatch(c.rstrip("*")) for c in cells)


def console(stderr: bool = False) -> Any:
    """A Console as wide as the terminal (COLUMNS when set; 80 when not a terminal)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def print_table(columns: Sequence[Column | str], rows: Sequence[Mapping[str, Any]], title: str = "",
                out: Optional[Any] = None) -> None:
    """`rows` (dicts keyed by Column.key) as a table as wide as the terminal at most, then which columns it hid."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out = out or console()
    columns = [c if isinstance(c, Column) else Column(c) for c in columns]
    cells = [[cell(row.get(c.key)) for c in columns] for row in rows]
    layout = fit(columns, cells, out.width)
    shown = [columns.index(c) for c in layout.columns]
    table = Table(title=Text(title) if title else None, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True,
                  pad_edge=False, show_edge=False, title_justify="left", title_style="bold")
    for i, width in zip(shown, layout.widths):
        # "fold", not "…": should a terminal be too narrow even for the kept columns, nothing is lost
        table.add_column(Text(columns[i].title), width=width, no_wrap=not columns[i].wrap, overflow="fold",
                         justify="right" if _numeric(row[i] for row in cells) else "left")
    for row in cells:
        table.add_row(*(Text(row[i]) for i in shown))
    out.print(table)
    if layout.hidden:
        print_text(f"(hidden at this width: {', '.join(c.title for c in layout.hidden)}; see --json)", out)


def print_fields(fields: Iterable[tuple[str, Any]], out: Optional[Any] = None) -> None:
    """`key: value` lines, keys right-aligned; a long or multi-line value folds under itself."""
    from rich.table import Table
    from rich.text import Text

    out = out or console()
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, justify="right", style="bold")
    grid.add_column(overflow="fold")
    for key, value in fields:
        grid.add_row(Text(f"{key}:"), Text(cell(value)))
    out.print(grid)


GLUE = "\u00a0"  # between two words that print_text keeps on one line: "TIMEOUT 1", never "TIMEOUT" / "1"


def print_text(text: str, out: Optional[Any] = None) -> None:
    """A line of plain text, wrapped between words to the terminal's width (never between GLUEd words)."""
    import textwrap

    from rich.text import Text

    out = out or console()
    lines = textwrap.wrap(text, out.width, break_on_hyphens=False) or [""]  # splits at ASCII blanks only
    out.print(Text("\n".join(lines).replace(GLUE, " ")))
