"""A table of runs that stays fast at 10,000s of rows: it renders only the lines on screen (Line API).

Filtering, sorting and grouping happen outside (tui.model); this widget shows a list of lines
(RunRow or GroupLine), keeps a cursor and a set of marked runs, and reports what the user asks for.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from slurmml.tui.model import Column, GroupLine, RunRow, cell_text

STATE_STYLES = {
    "RUNNING": "bold green", "QUEUED": "yellow", "SUBMITTING": "yellow", "COMPLETED": "blue",
    "STOPPED": "cyan", "PRUNED": "cyan",  # ended on request, cleanly: neither a success nor a failure
    "FAILED": "bold red", "TIMEOUT": "red", "OUT_OF_MEMORY": "red", "NODE_FAIL": "red", "LOST": "red",
    "CANCELLED": "magenta", "PREEMPTED": "magenta",
}


class RunTable(ScrollView, can_focus=True):
    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("space", "toggle_mark", "Mark"),
        Binding("enter", "open", "Open", show=False),
    ]
    COMPONENT_CLASSES = {"runtable--header", "runtable--cursor", "runtable--group", "runtable--marked"}
    DEFAULT_CSS = """
    RunTable { height: 1fr; }
    RunTable > .runtable--header { text-style: bold; background: $panel; }
    RunTable > .runtable--cursor { background: $accent 40%; }
    RunTable:focus > .runtable--cursor { background: $accent 70%; }
    RunTable > .runtable--group { text-style: bold; color: $text-accent; }
    RunTable > .runtable--marked { color: $warning; }
    """

    cursor = reactive(0, always_update=True, repaint=False)

    class Opened(Message):
        def __init__(self, run: RunRow) -> None:
            super().__init__()
            self.run = run

    class SortRequested(Message):
        def __init__(self, column: str) -> None:
            super().__init__()
            self.column = column

    class CursorMoved(Message):
        def __init__(self, run: Optional[RunRow]) -> None:
            super().__init__()
            self.run = run

    def __init__(self, clock: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self.lines: list[Any] = []
        self.columns: list[Column] = []
        self.marked: set[str] = set()
        self.sort_column: Optional[str] = None
        self.sort_descending = False
        self._offsets: list[int] = []

    # -- data ------------------------------------------------------------------------------------------
    def show(self, lines: list[Any], columns: list[Column], keep_run: Optional[str] = None) -> None:
        """Replace the lines; the cursor stays on the same run when it is still shown."""
        self.lines = lines
        self.columns = columns
        self._offsets = []
        x = 0
        for column in columns:
            self._offsets.append(x)
            x += column.width + 1
        self.virtual_size = Size(x, len(lines) + 1)
        target = self._index_of(keep_run) if keep_run else None
        self.cursor = self._on_row(self._clamp(target if target is not None else self.cursor), 1)
        self._scroll_cursor_into_view()
        self.refresh()

    @property
    def row_count(self) -> int:
        return sum(1 for line in self.lines if isinstance(line, RunRow))

    @property
    def current(self) -> Optional[RunRow]:
        if 0 <= self.cursor < len(self.lines) and isinstance(self.lines[self.cursor], RunRow):
            return self.lines[self.cursor]
        return None

    def marked_or_current(self) -> list[RunRow]:
        marked = [line for line in self.lines if isinstance(line, RunRow) and line.run_id in self.marked]
        return marked or ([self.current] if self.current else [])

    def _index_of(self, run_id: str) -> Optional[int]:
        for index, line in enumerate(self.lines):
            if isinstance(line, RunRow) and line.run_id == run_id:
                return index
        return None

    def _clamp(self, index: int) -> int:
        return max(0, min(index, len(self.lines) - 1))

    # -- keys and mouse --------------------------------------------------------------------------------
    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        self.post_message(self.CursorMoved(self.current))

    def action_cursor(self, delta: int) -> None:
        self.cursor = self._on_row(self._clamp(self.cursor + delta), 1 if delta >= 0 else -1)
        self._scroll_cursor_into_view()

    def _on_row(self, index: int, step: int) -> int:
        """The nearest run line from `index` in the direction of `step` (group headings are skipped)."""
        for direction in (step, -step):
            probe = index
            while 0 <= probe < len(self.lines):
                if isinstance(self.lines[probe], RunRow):
                    return probe
                probe += direction
        return index

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.size.height - 2))

    def action_jump(self, index: int) -> None:
        self.cursor = self._on_row(self._clamp(index if index >= 0 else len(self.lines) - 1), 1 if index >= 0 else -1)
        self._scroll_cursor_into_view()

    def action_toggle_mark(self) -> None:
        run = self.current
        if run is None:
            return
        self.marked.symmetric_difference_update({run.run_id})
        self.action_cursor(1)
        self.refresh()

    def action_open(self) -> None:
        if self.current is not None:
            self.post_message(self.Opened(self.current))

    def _scroll_cursor_into_view(self) -> None:
        # line i is drawn at virtual y = i + 1, under the header that stays on the first screen line
        self.scroll_to_region(Region(0, self.cursor, 1, 2), animate=False, immediate=True, force=True)

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            column = self._column_at(event.x + int(self.scroll_x))
            if column is not None and column.key != "mark":
                self.post_message(self.SortRequested(column.key))
            return
        index = int(self.scroll_y) + event.y - 1
        if 0 <= index < len(self.lines) and isinstance(self.lines[index], RunRow):
            self.cursor = index
            if event.chain >= 2:
                self.action_open()

    def _column_at(self, x: int) -> Optional[Column]:
        for column, start in zip(self.columns, self._offsets):
            if start <= x < start + column.width + 1:
                return column
        return None

    # -- drawing -----------------------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x = int(self.scroll_x)
        if y == 0:
            segments = self._header_segments()
        else:
            index = int(self.scroll_y) + y - 1
            if index >= len(self.lines):
                return Strip.blank(width, self.rich_style)
            segments = self._line_segments(index)
        strip = Strip(segments).crop(scroll_x, scroll_x + width)
        return strip.extend_cell_length(width, self.rich_style)

    def _header_segments(self) -> list[Segment]:
        style = self.get_component_rich_style("runtable--header")
        parts = []
        for column in self.columns:
            title = column.title
            if column.key == self.sort_column:
                title += " ▼" if self.sort_descending else " ▲"
            parts.append(Segment(_fit(title, column.width, column.align) + " ", style))
        total = sum(c.width + 1 for c in self.columns)
        parts.append(Segment(" " * max(0, self.size.width - total), style))
        return parts

    def _line_segments(self, index: int) -> list[Segment]:
        line = self.lines[index]
        base = self.rich_style
        if index == self.cursor:
            base = base + self.get_component_rich_style("runtable--cursor")
        if isinstance(line, GroupLine):
            style = base + self.get_component_rich_style("runtable--group")
            return [Segment(line.text.ljust(max(self.virtual_size.width, len(line.text))), style)]
        now = self.clock()
        marked = line.run_id in self.marked
        row_style = base + self.get_component_rich_style("runtable--marked") if marked else base
        segments = []
        for column in self.columns:
            text = _fit(cell_text(line, column, now, marked), column.width, column.align) + " "
            style = row_style
            if column.key == "state":
                style = row_style + Style.parse(STATE_STYLES.get(line.state, ""))
            segments.append(Segment(text, style))
        return segments


def _fit(text: str, width: int, align: str) -> str:
    if len(text) > width:
        return text[: max(0, width - 1)] + "…"
    return text.rjust(width) if align == "right" else text.ljust(width)
