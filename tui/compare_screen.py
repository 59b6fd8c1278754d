"""Two or more runs side by side: each metric's curves overlaid, and only the config keys that differ."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static
from textual_plotext import PlotextPlot

from slurmml.tui.model import differing_keys, distinguishing_overrides
from slurmml.tui.source import RegistrySource
from slurmml.tui.workers import background, deliver

MAX_PLOTS = 8


class CompareScreen(Screen):
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
    ]
    DEFAULT_CSS = """
    CompareScreen #title { height: 1; background: $primary; padding: 0 1; }
    CompareScreen #plots { height: 1fr; }
    CompareScreen PlotextPlot { height: 14; }
    CompareScreen #legend { height: auto; padding: 0 1; }
    CompareScreen .section { text-style: bold; color: $text-accent; padding: 0 1; }
    CompareScreen #differences { height: auto; max-height: 10; }
    """

    def __init__(self, run_ids: list[str], source: RegistrySource) -> None:
        super().__init__()
        self.run_ids = run_ids
        self.source = source

    def compose(self) -> ComposeResult:
        yield Static(f"compare {len(self.run_ids)} runs", id="title")
        yield Static("", id="legend", markup=False)
        yield VerticalScroll(id="plots")
        yield Label("Config keys that differ", classes="section")
        yield DataTable(id="differences", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @background("comparing runs", group="compare", exclusive=True)
    def load(self) -> None:
        source = self.source
        runs = [source.run_detail(run_id) for run_id in self.run_ids]
        metrics: list[str] = []
        for run in runs:
            metrics.extend(name for name in run["metrics"] if name not in metrics)
        curves = source.curves(self.run_ids, metrics[:MAX_PLOTS])
        configs = source.configs(self.run_ids)
        deliver(self, self.show, runs, curves, configs)

    def show(self, runs: list[dict[str, Any]], curves: dict[str, dict[str, list[tuple]]],
             configs: list[dict[str, Any]]) -> None:
        labels = distinguishing_overrides([run.get("overrides") or [] for run in runs])
        self.query_one("#legend", Static).update(
            "\n".join(f"{i + 1}. {run['id']}  {label}" for i, (run, label) in enumerate(zip(runs, labels))))
        panel = self.query_one("#plots", VerticalScroll)
        if not curves:
            panel.mount(Static("These runs have logged no metrics yet."))
        for name, by_run in curves.items():
            plot = PlotextPlot()
            panel.mount(plot)
            plt = plot.plt
            plt.title(name)
            plt.xlabel("step")
            for number, (run_id, label) in enumerate(zip(self.run_ids, labels)):
                points = by_run.get(run_id) or []
                if points:
                    plt.plot([p[0] for p in points], [p[1] for p in points], label=f"{number + 1}. {label}"[:40], marker="braille")
        table = self.query_one("#differences", DataTable)
        table.add_column("key")
        for number, run in enumerate(runs):
            table.add_column(Text(f"{number + 1}. {run['id']}"))
        differences = differing_keys(configs)
        for key, values in differences:  # DataTable reads a str cell as markup: config keys and values are Text
            table.add_row(Text(key), *(Text("—" if v is None else (v if isinstance(v, str) else json.dumps(v)))
                                       for v in values))
        if not differences:
            table.add_row("(no differences)", *("" for _ in runs))

