"""Small modal screens: help, confirmation, the clone editor and the set-values dialog."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from slurmml.tui.model import parse_set_text

HELP = """\
[b]Runs[/b]
  ↑ ↓ PgUp PgDn Home End  move            enter / double-click  open a run
  space                   mark a run      c                     compare marked runs
  /                       filter          esc                   clear the filter
  s / S                   sort by next column / reverse (or click a column title)
  g                       group by sweep  l                     leaderboard
  x                       cancel job(s)   r                     requeue job(s)
  n                       clone: edit the overrides and submit a new run
  v                       set values in running jobs: KEY=VALUE ... (at their next step)
  p                       snapshot: the jobs save a checkpoint now and train on
  t                       stop: the jobs save a checkpoint, then end (STOPPED)
  f5                      refresh now     q                     quit

[b]Filter[/b]  words match run ids, sweeps, states, hosts and overrides;
  KEY OP VALUE compares a config key, a metric or a run column:
  [i]mlp failed[/i]   [i]lr<0.01[/i]   [i]model=mlp val_acc>0.9[/i]   [i]state=RUNNING[/i]
  a logged metric wins over a config key of the same name: write [i]optimizer.lr<0.01[/i] for the config

[b]A run[/b]  1 overview · 2 logs (e: stdout/stderr, follows the file) · 3 metrics · 4 GPU
  its live controls are listed in the overview; the plots mark the steps they applied at
[b]Leaderboard[/b]  pick metric and scope; m flips min/max; a config key ranks within its values

One shared poller asks Slurm for every view of this registry (squeue every 10 s at
most, sacct once a minute); the status line says how old Slurm's view is.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 96; height: auto; border: thick $primary; background: $surface; padding: 1 2; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(HELP)
            yield Label("esc: close")


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 80; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    ConfirmScreen Horizontal { height: auto; margin-top: 1; }
    ConfirmScreen Button { margin-right: 2; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, markup=False)
            with Horizontal():
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class CloneScreen(ModalScreen[str | None]):
    """Edit a run's overrides; returns the edited text (Hydra override syntax) or None."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]
    DEFAULT_CSS = """
    CloneScreen { align: center middle; }
    CloneScreen > Vertical { width: 110; height: auto; border: thick $primary; background: $surface; padding: 1 2; }
    CloneScreen Horizontal { height: auto; margin-top: 1; }
    CloneScreen Button { margin-right: 2; }
    """

    def __init__(self, run_id: str, overrides: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.overrides = overrides

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Clone run {self.run_id}: same code and config, with these overrides", markup=False)
            yield Input(self.overrides, id="overrides")
            yield Static("enter: submit a new run (it records this run as its parent) · esc: cancel", classes="hint")
            with Horizontal():
                yield Button("Submit", variant="primary", id="submit")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.dismiss(self.query_one(Input).value)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.query_one(Input).value if event.button.id == "submit" else None)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class SetValuesScreen(ModalScreen[dict[str, Any] | None]):
    """KEY=VALUE words to send to running jobs; returns the parsed values, or None. A value that cannot be read
    is a notification and the dialog stays open, with what was typed."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]
    DEFAULT_CSS = """
    SetValuesScreen { align: center middle; }
    SetValuesScreen > Vertical { width: 100; max-width: 100%; height: auto; border: thick $primary;
                                 background: $surface; padding: 1 2; }
    SetValuesScreen Horizontal { height: auto; margin-top: 1; }
    SetValuesScreen Button { margin-right: 2; }
    """

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = run_ids

    def compose(self) -> ComposeResult:
        runs = self.run_ids[0] if len(self.run_ids) == 1 else f"{len(self.run_ids)} runs"
        with Vertical():
            yield Label(f"Set values in {runs}: the job applies them at its next step", markup=False)
            yield Input(placeholder="optimizer.lr=0.001 dropout=0.2", id="values")
            yield Static("KEY=VALUE words · enter: send · esc: cancel", classes="hint")
            with Horizontal():
                yield Button("Send", variant="primary", id="send")
                yield Button("Cancel", id="cancel")

    def _send(self) -> None:
        try:
            values = parse_set_text(self.query_one(Input).value)
        except ValueError as error:
            self.notify(f"set: {error}", severity="error", timeout=8, markup=False)
            return
        self.dismiss(values)

    @on(Input.Submitted)
    def submitted(self) -> None:
        self._send()

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "send":
            self._send()
        else:
            self.dismiss(None)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
