"""The terminal: tables, `key: value` fields and wrapped text, printed through Rich as plain text (never
markup), as wide as the terminal at most. The layout decisions are core/tables.py's."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

from slurmml.core.tables import GLUE, Column, cell, fit, numeric_column


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
                         justify="right" if numeric_column(row[i] for row in cells) else "left")
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


def print_text(text: str, out: Optional[Any] = None) -> None:
    """A line of plain text, wrapped between words to the terminal's width (never between GLUEd words)."""
    import textwrap

    from rich.text import Text

    out = out or console()
    lines = textwrap.wrap(text, out.width, break_on_hyphens=False) or [""]  # splits at ASCII blanks only
    out.print(Text("\n".join(lines).replace(GLUE, " ")))
