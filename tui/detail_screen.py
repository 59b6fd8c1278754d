"""One run: its config and overrides, Slurm's facts, its live controls, its logs as they grow, metric plots (with
the steps where controls were applied marked) and GPU sparklines."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Optional

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, Log, Sparkline, Static, TabbedContent, TabPane
from textual_plotext import PlotextPlot

from slurmml.core.direction import best_of, metric_mode
from slurmml.core.text import error_line
from slurmml.tui.messages import ActOnRuns, RunAction
from slurmml.tui.model import ACTIVE_STATES, RunRow, first_stream, format_duration, format_number, plot_marks
from slurmml.tui.source import LogTail, RegistrySource, log_paths, log_sizes
from slurmml.tui.workers import background, deliver

LOG_POLL_S = 1.0
MAX_PLOTS = 12
TABS = Binding.Group("Tabs", compact=True)
CONTROL_STYLES = {"applied": "green", "refused": "red", "pending": "yellow", "expired": "dim", "timed out": "dim"}
MARK_COLOR = "orange"


def _when(seconds: Optional[float]) -> str:
    return "" if seconds is None else dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def facts_table(run: dict[str, Any]) -> Table:
    """Slurm's and the run's own facts, in Slurm's vocabulary."""
    job = run.get("job")
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("run", run["id"]),
        ("state", run["state"] + (f"  ({error_line(run['error'])[:80]})" if run.get("error") else "")),
        ("JobId", run.get("slurm_job_id") or "(local run)"),
        ("NodeList", (job.node_list if job else None) or run.get("host") or ""),
        ("ExitCode", "" if run.get("exit_code") is None else str(run["exit_code"])),
        ("Restarts", str(run.get("restarts") or 0)),
        ("Submit", _when(job.submit if job else run.get("created"))),
        ("Start", _when(run.get("started"))),
        ("End", _when(run.get("ended"))),
    ]
    if job:
        rows += [
            ("AllocCPUS", str(job.alloc_cpus or "")),
            ("AllocGPUs", str(job.alloc_gpus or 0)),
            ("ReqMem", f"{job.req_mem_mb:.0f} MB" if job.req_mem_mb else ""),
            ("MaxRSS", f"{job.max_rss_mb:.0f} MB" if job.max_rss_mb else ""),
            ("Elapsed", format_duration(job.elapsed_s)),
            ("Timelimit", format_duration(job.timelimit_s)),
            ("Reason", job.reason or ""),
        ]
    if run.get("parent_id"):
        rows.append(("cloned from", run["parent_id"]))
    for name, value in rows:
        table.add_row(name, Text(value))  # values can hold anything a user or a job wrote: never markup
    return table


def history_table(run: dict[str, Any]) -> Table:
    table = Table("time", "state", "source", box=None, padding=(0, 1), header_style="bold")
    for change in run.get("states") or []:
        table.add_row(_when(change["time"]), Text(change["state"]), Text(change["source"] or ""))
    return table


def executions_table(run: dict[str, Any]) -> Table:
    """Each execution of a requeued or resubmitted run: where it ran, how it ended, what it saved and resumed."""
    table = Table("#", "job", "node", "state", "why", "saved", "from", "elapsed", box=None, padding=(0, 1),
                  header_style="bold")
    for e in run.get("executions") or []:
        table.add_row(str(e["number"]), Text(e["job_id"] or ""), Text(e["host"] or ""), Text(e["state"] or ""),
                      Text(e["reason"] or ""), "" if e["checkpoint_step"] is None else str(e["checkpoint_step"]),
                      "" if e["resumed_from"] is None else str(e["resumed_from"]), format_duration(e["elapsed_s"]))
    return table


def data_table(run: dict[str, Any]) -> Table:
    """What the run read (dataset versions) and produced (artifacts, and where their bytes are)."""
    table = Table("", "what", "where", box=None, padding=(0, 1), header_style="bold")
    for used in run.get("inputs") or []:
        table.add_row("used", Text(f"{used['dataset']}@v{used['version']}"), Text(used["digest"] or ""))
    for artifact in run.get("artifacts") or []:
        where = artifact.get("uri") or artifact.get("path") or ""
        if artifact.get("upload") and artifact["upload"] != "uploaded":
            where = f"{artifact['upload']}: {where}"
        table.add_row("produced", Text(artifact["name"] or ""), Text(where))
    return table


def controls_table(run: dict[str, Any]) -> Table:
    """The run's live controls, oldest first: who asked what and when, and what the job answered at which step."""
    table = Table("asked", "what", "status", "step", "user", "from", "message", box=None, padding=(0, 1),
                  header_style="bold")
    for control in run.get("controls") or []:
        shown = control["shown"]
        table.add_row(_when(control["asked"]), Text(control["what"]), Text(shown, style=CONTROL_STYLES.get(shown, "")),
                      "" if control["step"] is None else str(control["step"]), Text(control["user"] or ""),
                      Text(control["source"] or ""), Text(error_line(control["message"] or "")))
    return table


def config_text(config: Optional[dict[str, Any]]) -> str:
    if not config:
        return "(not recorded yet: the run has not started)"
    import yaml

    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False).rstrip()


def _draw_marks(plt: Any, marks: list[tuple[int, str]], values: list[Any]) -> None:
    """A vertical line at each step where a control was applied, labelled at the top of the curve."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    for step, label in marks:
        plt.vline(step, MARK_COLOR)
        if finite:
            plt.text(label, x=step, y=max(finite), color=MARK_COLOR)


class RunDetailScreen(Screen):
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("1", "tab('overview')", "Overview", group=TABS),
        Binding("2", "tab('logs')", "Logs", group=TABS),
        Binding("3", "tab('metrics')", "Metrics", group=TABS),
        Binding("4", "tab('gpu')", "GPU", group=TABS),
        # the footer fits 80 columns: the rest are in the help (?)
        Binding("e", "toggle_stream", "stdout/stderr", show=False),
        Binding("x", "cancel", "Cancel"),
        Binding("r", "requeue", "Requeue", show=False),
        Binding("n", "clone", "Clone", show=False),
        Binding("v", "set_values", "Set value"),
        Binding("p", "snapshot", "Snapshot"),
        Binding("t", "stop", "Stop"),
    ]
    DEFAULT_CSS = """
    RunDetailScreen #title { height: 1; background: $primary; padding: 0 1; }
    RunDetailScreen TabbedContent { height: 1fr; }
    RunDetailScreen TabPane { height: 1fr; padding: 0; }
    RunDetailScreen #overview-columns { height: auto; }
    RunDetailScreen #facts-column { width: 60; height: auto; padding: 0 1; }
    RunDetailScreen #config-column { width: 1fr; height: auto; padding: 0 1; }
    RunDetailScreen #controls-section { height: auto; padding: 0 1; }
    RunDetailScreen .section { text-style: bold; color: $text-accent; margin-top: 1; }
    RunDetailScreen #log-path { height: 1; color: $text-muted; }
    RunDetailScreen Log { height: 1fr; }
    RunDetailScreen PlotextPlot { height: 16; }
    RunDetailScreen Sparkline { height: 4; margin: 0 1 1 1; }
    """

    def __init__(self, run_id: str, source: RegistrySource, *, reload_s: float = 0.0) -> None:
        """reload_s: how often an active run is read again (0: never; the app's refresh interval)."""
        super().__init__()
        self.run_id = run_id
        self.source = source
        self.reload_s = reload_s
        self.run: Optional[dict[str, Any]] = None
        self.stream: Optional[str] = None  # chosen when the run is first loaded (tui.model.first_stream)
        self.tail: Optional[LogTail] = None
        self.plots: dict[str, PlotextPlot] = {}
        self.plotted: dict[str, int] = {}  # metric -> point count last plotted
        self.marks: list[tuple[int, str]] = []  # (step, label) of the applied controls the plots mark

    def compose(self) -> ComposeResult:
        yield Static(f"run {self.run_id}", id="title", markup=False)
        with TabbedContent(initial="overview"):
            with TabPane("Overview", id="overview"):
                with VerticalScroll():
                    with Horizontal(id="overview-columns"):
                        with Vertical(id="facts-column"):
                            yield Label("Slurm", classes="section")
                            yield Static(id="facts", markup=False)
                            yield Label("Overrides", classes="section")
                            yield Static(id="overrides", markup=False)
                            yield Label("State history", classes="section")
                            yield Static(id="history", markup=False)
                            yield Label("Executions", id="executions-label", classes="section")
                            yield Static(id="executions", markup=False)
                            yield Label("Data", id="data-label", classes="section")
                            yield Static(id="data", markup=False)
                        with Vertical(id="config-column"):
                            yield Label("Resolved config", classes="section")
                            yield Static(id="config", markup=False)
                    with Vertical(id="controls-section"):  # full width: a message can be long
                        yield Label("Controls", classes="section")
                        yield Static(id="controls", markup=False)
            with TabPane("Logs", id="logs"):
                yield Static("", id="log-path", markup=False)
                yield Log(max_lines=5000, id="log")
            with TabPane("Metrics", id="metrics"):
                yield VerticalScroll(Static("no metrics logged yet", id="no-metrics"), id="plots")
            with TabPane("GPU", id="gpu"):
                yield VerticalScroll(id="gpu-panel")
        yield Footer(show_command_palette=False)  # ctrl+p still opens it; the footer keeps to 80 columns

    def on_mount(self) -> None:
        self.load()
        self.set_interval(LOG_POLL_S, self.follow_log)
        if self.reload_s > 0:
            self.set_interval(self.reload_s, self.reload_if_active)

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    # -- loading -------------------------------------------------------------------------------------------
    @background("loading the run", group="detail", exclusive=True)
    def load(self) -> None:
        run = self.source.run_detail(self.run_id)
        names = list(run["metrics"])[:MAX_PLOTS]
        curves = self.source.curves([self.run_id], names) if names else {}
        deliver(self, self.show_run, run, curves, first_stream(run["state"], log_sizes(log_paths(run))))

    def reload_if_active(self) -> None:
        if self.run is not None and self.run["state"] in ACTIVE_STATES:
            self.load()

    def show_run(self, run: dict[str, Any], curves: dict[str, dict[str, list[tuple]]], stream: str) -> None:
        first = self.run is None
        self.run = run
        self.query_one("#title", Static).update(
            Text.assemble(("run ", ""), (run["id"], "bold"), f"  ·  {run['state']}",
                          f"  ·  owner {run['owner']}" if run.get("owner") else ""))
        self.query_one("#facts", Static).update(facts_table(run))
        self.query_one("#overrides", Static).update(" ".join(run.get("overrides") or []) or "(none)")
        self.query_one("#history", Static).update(history_table(run))
        several = len(run.get("executions") or []) > 1  # a run that ran once has nothing to add here
        self.query_one("#executions", Static).update(executions_table(run) if several else "")
        self.query_one("#executions-label", Label).display = self.query_one("#executions", Static).display = several
        has_data = bool(run.get("inputs") or run.get("artifacts"))
        self.query_one("#data", Static).update(data_table(run) if has_data else "")
        self.query_one("#data-label", Label).display = self.query_one("#data", Static).display = has_data
        self.query_one("#config", Static).update(config_text(run.get("config")))
        has_controls = bool(run.get("controls"))
        self.query_one("#controls", Static).update(controls_table(run) if has_controls else "")
        self.query_one("#controls-section").display = has_controls
        self._show_plots(run, curves)
        self._show_gpu(run["gpu"])
        if first:
            self._open_stream(self.stream or stream)

    def _show_plots(self, run: dict[str, Any], curves: dict[str, dict[str, list[tuple]]]) -> None:
        panel = self.query_one("#plots", VerticalScroll)
        if curves:
            self.query_one("#no-metrics").display = False
        marks = plot_marks(run.get("control_marks") or [])
        marks_changed, self.marks = marks != self.marks, marks
        for name, by_run in curves.items():
            points = by_run.get(self.run_id) or []
            if name in self.plots and self.plotted.get(name) == len(points) and not marks_changed:
                continue  # unchanged since the last reload
            if name not in self.plots:
                self.plots[name] = PlotextPlot()
                panel.mount(self.plots[name])
            self.plotted[name] = len(points)
            plot = self.plots[name]
            plt = plot.plt
            plt.clear_data()
            summary = run["metrics"].get(name, {})
            best = best_of(summary, metric_mode(name, run.get("direction")))
            plt.title(f"{name}   last {format_number(summary.get('last'))}   best {format_number(best)}")
            if points:
                plt.plot([p[0] if p[0] is not None else i for i, p in enumerate(points)], [p[1] for p in points], marker="braille")
            _draw_marks(plt, marks, [p[1] for p in points])
            plt.xlabel("step")
            plot.refresh()

    def _show_gpu(self, series: dict[str, list[float]]) -> None:
        panel = self.query_one("#gpu-panel", VerticalScroll)
        panel.remove_children()
        if not series["util"]:
            panel.mount(Static("No GPU samples: the run has none (no NVML on its node, no GPUs allocated, "
                               "or it has not sampled yet)."))
            return
        util, memory = series["util"], series["memory"]
        panel.mount(Label(f"GPU utilization  (last {util[-1]:.0f}%, mean {sum(util) / len(util):.0f}%, {len(util)} samples)"))
        panel.mount(Sparkline(util, summary_function=max))
        if memory:
            panel.mount(Label(f"GPU memory used  (last {memory[-1]:.0f}%, peak {max(memory):.0f}%)"))
            panel.mount(Sparkline(memory, summary_function=max))

    # -- logs ------------------------------------------------------------------------------------------------
    def _open_stream(self, stream: str) -> None:
        self.stream = stream
        path = log_paths(self.run or {})[stream]
        self.tail = LogTail(path)
        self.query_one("#log-path", Static).update(f"{stream}: {path or '(no log recorded for this run)'}  [e: switch]")
        self.query_one("#log", Log).clear()
        self.follow_log()

    def action_toggle_stream(self) -> None:
        other = "stdout" if self.stream == "stderr" else "stderr"
        if self.run is None:
            self.stream = other  # the first load opens it
        else:
            self._open_stream(other)
        self.action_tab("logs")

    @background("reading the log", group="log", exclusive=True)
    def follow_log(self) -> None:
        tail = self.tail
        if tail is None:
            return
        text, restarted = tail.read_new()
        if text or restarted:
            deliver(self, self._append_log, tail, text, restarted)

    def _append_log(self, tail: LogTail, text: str, restarted: bool) -> None:
        if tail is not self.tail:
            return  # the user switched streams meanwhile
        log = self.query_one("#log", Log)
        if restarted:
            log.clear()
        log.write(text)

    # -- actions ---------------------------------------------------------------------------------------------
    def _row(self) -> Optional[RunRow]:
        if self.run is None:
            return None
        run = self.run
        return RunRow(run["id"], run.get("sweep_id") or "", run.get("job_num"), run["state"], run.get("slurm_job_id") or "",
                      overrides=" ".join(run.get("overrides") or []), owner=run.get("owner") or "")

    def _act(self, action: RunAction) -> None:
        if row := self._row():
            self.post_message(ActOnRuns(action, [row]))

    def action_cancel(self) -> None:
        self._act("cancel")

    def action_requeue(self) -> None:
        self._act("requeue")

    def action_clone(self) -> None:
        self._act("clone")

    def action_set_values(self) -> None:
        self._act("set")

    def action_snapshot(self) -> None:
        self._act("snapshot")

    def action_stop(self) -> None:
        self._act("stop")

    @on(TabbedContent.TabActivated)
    def tab_activated(self) -> None:
        if self.query_one(TabbedContent).active == "logs":
            self.query_one("#log", Log).focus()

