"""Runs ranked by a metric (min or max), in one sweep or across sweeps, optionally within a shared config key."""

from __future__ import annotations

from typing import Any, Optional

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Select, Static

from slurmml.errors import SlurmmlError
from tui.model import format_number, metric_mode

ALL_SWEEPS = "__all__"


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

    def __init__(self, sweep: Optional[str] = None) -> None:
        super().__init__()
        self.sweep = sweep
        self.mode: Optional[str] = None  # None: the metric's usual best end

    def compose(self) -> ComposeResult:
        yield Static("leaderboard", id="title")
        with Horizontal(id="controls"):
            yield Select([], prompt="metric", id="metric", allow_blank=True)
            yield Select([("all sweeps", ALL_SWEEPS)], value=ALL_SWEEPS, id="scope", allow_blank=False)
            yield Input(placeholder="rank within a config key, e.g. dataset", id="group-key")
        yield DataTable(id="board", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.load_choices()

    @work(thread=True, exclusive=True, group="leaderboard-choices")
    def load_choices(self) -> None:
        metrics = self.app.source.metric_names()
        sweeps = self.app.source.sweeps()
        self.app.call_from_thread(self.show_choices, metrics, sweeps)

    def show_choices(self, metrics: list[str], sweeps: list[dict[str, Any]]) -> None:
        scope = self.query_one("#scope", Select)
        scope.set_options([("all sweeps", ALL_SWEEPS)] +
                          [(f"{s['id']} {s.get('name') or ''}".strip(), s["id"]) for s in reversed(sweeps)])
        if self.sweep and any(s["id"] == self.sweep for s in sweeps):
            scope.value = self.sweep
        metric = self.query_one("#metric", Select)
        metric.set_options([(name, name) for name in metrics])
        if metrics:
            preferred = [m for m in metrics if m.startswith("val")] or metrics
            metric.value = preferred[0]
        else:
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
        metric = self._metric()
        current = self.mode or (metric_mode(metric) if metric else "max")
        self.mode = "min" if current == "max" else "max"
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
        mode = self.mode or metric_mode(metric)
        self._rank(metric, mode, None if scope in (ALL_SWEEPS, Select.BLANK) else str(scope), group_key)

    @work(thread=True, exclusive=True, group="leaderboard")
    def _rank(self, metric: str, mode: str, sweep: Optional[str], group_key: Optional[str]) -> None:
        try:
            rows = self.app.source.leaderboard(metric, mode, sweep, group_key)
        except SlurmmlError as error:
            self.app.call_from_thread(self.app.notify, str(error), severity="error")
            return
        empty = "no run has logged it"
        if not rows and group_key and not self.app.source.has_config_key(group_key):
            empty = f"no run has a config key {group_key!r} (nested keys are dotted, e.g. model.name)"
        self.app.call_from_thread(self.show_board, metric, mode, group_key, rows, empty)

    def show_board(self, metric: str, mode: str, group_key: Optional[str], rows: list[dict[str, Any]],
                   empty: str = "no run has logged it") -> None:
        self.query_one("#title", Static).update(
            f"leaderboard · {metric} ({'highest' if mode == 'max' else 'lowest'} first, m: flip)"
            + (f" · ranked within each {group_key}" if group_key else ""))
        table = self.query_one("#board", DataTable)
        table.clear(columns=True)
        columns = (["#"] + ([group_key] if group_key else []) + ["run", metric, "step", "state", "overrides"])
        table.add_columns(*columns)
        for row in rows:
            cells = [str(row["rank"])] + ([str(row["group"])] if group_key else [])
            cells += [row["id"], format_number(row["value"]), "" if row["step"] is None else str(row["step"]),
                      row["state"], row["overrides"]]
            table.add_row(*cells, key=row["id"])
        if not rows:
            table.add_row(*([empty if c == "run" else "" for c in columns]))

    @on(DataTable.RowSelected, "#board")
    def open_run(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.app.open_run(str(event.row_key.value))
