"""Runs ranked by a metric (min or max), in one sweep or across sweeps, optionally within a shared config key."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Select, Static

from slurmml.errors import SlurmmlError
from slurmml.core.direction import RESULT, default_metric, shared_direction
from slurmml.registry.browse import BY_DATASET
from slurmml.tui.messages import OpenRun
from slurmml.tui.model import format_number
from slurmml.tui.source import RegistrySource
from slurmml.tui.workers import background, deliver

ALL_SWEEPS = "__all__"
NOTHING_LOGGED = "no run has logged it"


class Board(NamedTuple):
    """One ranking, read in a worker, drawn by show_board."""

    metric: str
    mode: str  # what it was ranked by: min or max
    group_key: Optional[str]
    rows: list[dict[str, Any]]
    empty: str = NOTHING_LOGGED  # what the board says when no row came back


class LeaderboardScreen(Screen):
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("m", "toggle_mode", "Min/max"),
    ]
    DEFAULT_CSS = """
    LeaderboardScreen #title { height: 1; background: $primary; padding: 0 1; }
    LeaderboardScreen #controls { height: auto; }
    LeaderboardScreen #metric { width: 30; }
    LeaderboardScreen #scope { width: 40; }
    LeaderboardScreen #group-key { width: 1fr; }
    LeaderboardScreen #board { height: 1fr; }
    """

    def __init__(self, source: RegistrySource, sweep: Optional[str] = None) -> None:
        super().__init__()
        self.source = source
        self.sweep = sweep
        self.mode: Optional[str] = None  # None: the metric's usual best end
        self.shown_mode = "max"  # what the board shows now

    def compose(self) -> ComposeResult:
        yield Static("leaderboard", id="title", markup=False)
        with Horizontal(id="controls"):
            yield Select([], prompt="metric", id="metric", allow_blank=True)
            yield Select([("all sweeps", ALL_SWEEPS)], value=ALL_SWEEPS, id="scope", allow_blank=False)
            yield Input(placeholder="rank within a config key (e.g. model), or @dataset: each dataset version",
                        id="group-key")
        yield DataTable(id="board", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.load_choices()

    @background("loading the leaderboard", group="leaderboard-choices", exclusive=True)
    def load_choices(self) -> None:
        """The controls' choices and the board they open on, read in one worker and drawn in one go. (A
        second worker, started once the choices were drawn, left a moment with controls and no board, which
        a snapshot on a loaded machine caught.)"""
        metrics = self.source.metric_names()
        sweeps = self.source.sweeps()
        scope = self.sweep if self.sweep and any(s["id"] == self.sweep for s in sweeps) else ALL_SWEEPS
        metric, board = None, None
        if metrics:
            scoped = [s for s in sweeps if s["id"] == scope] or sweeps
            logged = {name: 1 for name in metrics if name != RESULT}
            metric = default_metric(logged, RESULT in metrics, shared_direction(s.get("direction") for s in scoped))
            board = self._ranked(metric, None, None if scope == ALL_SWEEPS else scope, None)
        deliver(self, self.show_choices, metrics, sweeps, scope, metric, board)

    def show_choices(self, metrics: list[str], sweeps: list[dict[str, Any]], scope: str, metric: Optional[str],
                     board: Optional[Board]) -> None:
        scope_select = self.query_one("#scope", Select)
        metric_select = self.query_one("#metric", Select)
        with self.prevent(Select.Changed):  # the board below is for these values: setting them ranks nothing
            scope_select.set_options([("all sweeps", ALL_SWEEPS)] + [
                (Text(f"{s['id']} {s.get('name') or ''}".strip()), s["id"]) for s in reversed(sweeps)])
            scope_select.value = scope
            # a prompt str would be read as markup
            metric_select.set_options([(Text(name), name) for name in metrics])
            if metric is not None:
                metric_select.value = metric
        if board is not None:
            self.show_board(board)
        elif not metrics:
            self.query_one("#board", DataTable).add_column("no metrics logged yet")

    @on(Select.Changed, "#metric")
    def metric_changed(self) -> None:
        self.mode = None  # each metric starts at its own best end (a loss lowest first)
        self.rank()

    @on(Select.Changed, "#scope")
    @on(Input.Submitted, "#group-key")
    def controls_changed(self) -> None:
        self.rank()

    def action_toggle_mode(self) -> None:
        self.mode = "min" if (self.mode or self.shown_mode) == "max" else "max"
        self.rank()

    def _metric(self) -> Optional[str]:
        value = self.query_one("#metric", Select).value
        return value if isinstance(value, str) else None

    def rank(self) -> None:
        metric = self._metric()
        if metric is None:
            return
        scope = self.query_one("#scope", Select).value
        group_key = self.query_one("#group-key", Input).value.strip() or None
        self._rank(metric, self.mode, None if scope in (ALL_SWEEPS, Select.BLANK) else str(scope), group_key)

    @background("ranking", group="leaderboard", exclusive=True)
    def _rank(self, metric: str, mode: Optional[str], sweep: Optional[str], group_key: Optional[str]) -> None:
        board = self._ranked(metric, mode, sweep, group_key)
        if board is not None:
            deliver(self, self.show_board, board)

    def _ranked(self, metric: str, mode: Optional[str], sweep: Optional[str],
                group_key: Optional[str]) -> Optional[Board]:
        """In a worker: the ranking, or None once the user was told why there is none."""
        try:
            mode, rows = self.source.leaderboard(metric, mode, sweep, group_key)
        except SlurmmlError as error:
            deliver(self, self.notify, str(error), severity="error", markup=False)
            return None
        if not rows and group_key == BY_DATASET:
            return Board(metric, mode, group_key, rows, "no ranked run recorded a dataset it read (slurmml.dataset)")
        if not rows and group_key and not self.source.has_config_key(group_key):
            return Board(metric, mode, group_key, rows,
                         f"no run has a config key {group_key!r} (nested keys are dotted, e.g. model.name)")
        return Board(metric, mode, group_key, rows)

    def show_board(self, board: Board) -> None:
        metric, mode, group_key, rows, empty = board
        self.shown_mode = mode
        self.query_one("#title", Static).update(
            f"leaderboard · {metric} ({'highest' if mode == 'max' else 'lowest'} first, m: flip)"
            + (f" · ranked within each {group_key}" if group_key else ""))
        table = self.query_one("#board", DataTable)
        table.clear(columns=True)
        columns = (["#"] + ([group_key] if group_key else []) + ["run", metric, "step", "state", "overrides"])
        table.add_columns(*map(Text, columns))  # DataTable reads a str as markup: every label and cell is Text
        for row in rows:
            cells = [str(row["rank"])] + ([str(row["group"])] if group_key else [])
            cells += [row["id"], format_number(row["value"]), "" if row["step"] is None else str(row["step"]),
                      row["state"], row["overrides"]]
            table.add_row(*map(Text, cells), key=row["id"])
        if not rows:
            table.add_row(*(Text(empty if c == "run" else "") for c in columns))

    @on(DataTable.RowSelected, "#board")
    def open_run(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.post_message(OpenRun(str(event.row_key.value)))
