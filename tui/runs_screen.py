"""The first screen: every sweep's runs with live state, filtered, sorted and grouped as the user asks."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from slurmml.errors import SlurmmlError
from slurmml.tui.messages import ActOnRuns, OpenCompare, OpenLeaderboard, OpenRun, RefreshRequested, RunAction
from slurmml.tui.model import (ACTIVE_STATES, Column, FilterQuery, apply_filter, columns_for, format_age,
                               group_by_sweep, parse_filter_text, sort_rows, state_counts)
from slurmml.tui.run_table import RunTable
from slurmml.tui.source import RefreshOutcome, RegistrySource, Snapshot
from slurmml.tui.workers import background, deliver


class RunsScreen(Screen):
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("s", "sort_next", "Sort"),
        Binding("S", "sort_reverse", "Reverse", show=False),
        # the footer fits 80 columns: the rest are in the help (?)
        Binding("g", "toggle_group", "Group", show=False),
        Binding("c", "compare", "Compare", show=False),
        Binding("l", "leaderboard", "Leaderboard", show=False),
        Binding("x", "cancel", "Cancel"),
        Binding("r", "requeue", "Requeue", show=False),
        Binding("n", "clone", "Clone", show=False),
        Binding("v", "set_values", "Set value"),
        Binding("p", "snapshot", "Snapshot", show=False),
        Binding("t", "stop", "Stop"),
        Binding("f5,ctrl+r", "refresh", "Refresh", show=False),
    ]
    DEFAULT_CSS = """
    RunsScreen #title { height: 1; background: $primary; color: $text; padding: 0 1; }
    RunsScreen #filter-bar { height: auto; display: none; }
    RunsScreen #filter-bar.visible { display: block; }
    RunsScreen #filter { width: 1fr; }
    RunsScreen #filter-problem { width: auto; max-width: 60; color: $error; padding: 0 1; }
    RunsScreen #status { height: 1; background: $panel; padding: 0 1; }
    """

    def __init__(self, source: RegistrySource, *, clock: Callable[[], float] = time.time, read_only: bool = False,
                 initial_filter: str = "") -> None:
        super().__init__()
        self.source = source  # answers the filter's expressions; snapshots come from the app (show_snapshot)
        self.clock = clock
        self.read_only = read_only
        self.snapshot: Optional[Snapshot] = None
        self.columns: list[Column] = []
        self.query_text = initial_filter
        self.filter: FilterQuery = parse_filter_text(initial_filter)
        self.allowed_ids: Optional[set[str]] = None  # runs matching the filter's expressions (None: no expressions)
        self.filter_problem = ""
        self.grouped = False
        self.slurm_checked_at: Optional[float] = None
        self.filter_generation = 0  # counts filters applied; benchmarks wait on it

    def compose(self) -> ComposeResult:
        yield Static("slurmml · runs", id="title")
        yield RunTable(self.clock, id="runs")
        with Horizontal(id="filter-bar", classes="visible" if self.query_text else ""):
            yield Input(self.query_text, placeholder="filter: words, state, lr<0.01, model=mlp, val_acc>0.9", id="filter")
            yield Static("", id="filter-problem", markup=False)
        yield Static("loading the registry…", id="status", markup=False)
        yield Footer(show_command_palette=False)  # ctrl+p still opens it; the footer keeps to 80 columns

    @property
    def table(self) -> RunTable:
        return self.query_one(RunTable)

    def on_mount(self) -> None:
        self.table.focus()
        self.table.sort_column = None

    # -- data in ---------------------------------------------------------------------------------------
    def show_snapshot(self, snapshot: Snapshot) -> None:
        first = self.snapshot is None
        self.snapshot = snapshot
        self.columns = columns_for(snapshot.rows, snapshot.metrics)  # sized once per snapshot, not per keystroke
        if first and self.filter.expressions:
            self._match_expressions(self.filter.expressions)
        else:
            self.apply_view()

    def refreshed(self, outcome: RefreshOutcome, snapshot: Optional[Snapshot]) -> None:
        if snapshot is not None:
            self.show_snapshot(snapshot)
        self.show_slurm_age(outcome.slurm_checked_at)
        for problem in outcome.problems:
            self.notify(problem, severity="warning", timeout=8, markup=False)

    def show_slurm_age(self, checked_at: Optional[float]) -> None:
        self.slurm_checked_at = checked_at
        self._update_status()

    def apply_view(self) -> None:
        """Filter, sort and group the snapshot's rows into the table (in memory: fast enough per keystroke)."""
        if self.snapshot is None:
            return
        now = self.clock()
        table = self.table
        keep = table.current.run_id if table.current else None
        rows = apply_filter(self.snapshot.rows, self.filter, self.allowed_ids)
        rows = sort_rows(rows, table.sort_column, table.sort_descending, now)
        lines: list[Any] = group_by_sweep(rows, self.snapshot.sweep_names) if self.grouped else rows
        table.show(lines, self.columns, keep_run=keep)
        self.filter_generation += 1
        self._update_status()

    def _update_status(self) -> None:
        if self.snapshot is None:
            return
        rows = self.snapshot.rows
        counts = state_counts(rows)
        parts = [f"{len(rows):,} runs"]
        shown = self.table.row_count
        if shown != len(rows):
            parts.append(f"{shown:,} shown")
        parts.extend(f"{n} {state.lower()}" for state, n in counts.items() if state in ("RUNNING", "QUEUED", "FAILED"))
        if self.table.marked:
            parts.append(f"{len(self.table.marked)} marked")
        if any(state in ACTIVE_STATES for state in counts):
            age = None if self.slurm_checked_at is None else self.clock() - self.slurm_checked_at
            parts.append(f"Slurm checked {format_age(age)}")
        else:
            parts.append("no active jobs")
        if self.read_only:
            parts.append("read-only")
        self.query_one("#status", Static).update(" · ".join(parts))

    # -- filtering -------------------------------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one("#filter-bar").add_class("visible")
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        if field.value:
            field.value = ""
        else:
            self.query_one("#filter-bar").remove_class("visible")
        self.table.focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        query = parse_filter_text(event.value)
        expressions_changed = query.expressions != self.filter.expressions
        self.filter = query
        if not query.expressions:
            self.allowed_ids = None
            self._set_filter_problem("")
            self.apply_view()
        elif expressions_changed:
            self._match_expressions(query.expressions)  # the registry answers; words apply with it
        else:
            self.apply_view()

    @on(Input.Submitted, "#filter")
    def filter_submitted(self) -> None:
        self.table.focus()

    @background("filtering", group="filter", exclusive=True)
    def _match_expressions(self, expressions: tuple[str, ...]) -> None:
        try:
            ids: Optional[set[str]] = self.source.matching_ids(expressions)
            problem = ""
        except SlurmmlError as error:
            ids, problem = None, str(error)
        deliver(self, self._expressions_matched, expressions, ids, problem)

    def _expressions_matched(self, expressions: tuple[str, ...], ids: Optional[set[str]], problem: str) -> None:
        if expressions != self.filter.expressions:
            return  # the user typed on; a newer match is on its way
        self._set_filter_problem(problem)
        if ids is not None or not problem:
            self.allowed_ids = ids
        self.apply_view()

    def _set_filter_problem(self, problem: str) -> None:
        self.filter_problem = problem
        self.query_one("#filter-problem", Static).update(problem)

    # -- sorting and grouping ----------------------------------------------------------------------------
    @on(RunTable.SortRequested)
    def sort_requested(self, event: RunTable.SortRequested) -> None:
        table = self.table
        if table.sort_column == event.column:
            table.sort_descending = not table.sort_descending
        else:
            table.sort_column, table.sort_descending = event.column, event.column.startswith("metric:") or event.column == "elapsed"
        self.apply_view()

    def action_sort_next(self) -> None:
        table = self.table
        keys = [c.key for c in table.columns if c.key != "mark"]
        if not keys:
            return
        following = keys[(keys.index(table.sort_column) + 1) % len(keys)] if table.sort_column in keys else keys[0]
        self.post_message(RunTable.SortRequested(following))

    def action_sort_reverse(self) -> None:
        if self.table.sort_column:
            self.table.sort_descending = not self.table.sort_descending
            self.apply_view()

    def action_toggle_group(self) -> None:
        self.grouped = not self.grouped
        self.apply_view()

    # -- other screens and actions: asked of the app (tui.messages) -------------------------------------------
    @on(RunTable.Opened)
    def open_run(self, event: RunTable.Opened) -> None:
        self.post_message(OpenRun(event.run.run_id))

    def action_compare(self) -> None:
        runs = self.table.marked_or_current()
        if len(runs) < 2:
            self.notify("Mark two or more runs with space, then press c to compare them.", severity="warning")
            return
        self.post_message(OpenCompare([r.run_id for r in runs]))

    def action_leaderboard(self) -> None:
        current = self.table.current
        self.post_message(OpenLeaderboard(current.sweep_id if current else None))

    def _act(self, action: RunAction) -> None:
        rows = self.table.marked_or_current()
        if rows:
            self.post_message(ActOnRuns(action, rows))

    def action_cancel(self) -> None:
        self._act("cancel")

    def action_requeue(self) -> None:
        self._act("requeue")

    def action_set_values(self) -> None:
        self._act("set")

    def action_snapshot(self) -> None:
        self._act("snapshot")

    def action_stop(self) -> None:
        self._act("stop")

    def action_clone(self) -> None:
        if self.table.current is not None:
            self.post_message(ActOnRuns("clone", [self.table.current]))

    def action_refresh(self) -> None:
        self.post_message(RefreshRequested())

    @on(RunTable.CursorMoved)
    def cursor_moved(self) -> None:
        self._update_status()
