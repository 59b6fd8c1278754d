"""What a screen asks of the app, as messages: a screen posts one, it bubbles up to SlurmmlApp, and the app's
one handler for it decides what happens (which screen to push, whether an action is allowed, the
confirmation). Screens get their data source in their constructor and never reach into the app.
"""

from __future__ import annotations

from typing import Literal, Optional

from textual.message import Message

from slurmml.tui.model import RunRow

RunAction = Literal["cancel", "requeue", "clone", "set", "snapshot", "stop"]  # the last three: live controls


class OpenRun(Message):
    """Show one run's detail."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id


class OpenCompare(Message):
    """Show these runs side by side."""

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__()
        self.run_ids = run_ids


class OpenLeaderboard(Message):
    """Rank runs, scoped to this sweep at first (None: all sweeps)."""

    def __init__(self, sweep: Optional[str]) -> None:
        super().__init__()
        self.sweep = sweep


class ActOnRuns(Message):
    """Cancel, requeue or send a live control to these runs, or clone the first one; the app checks and confirms
    first."""

    def __init__(self, action: RunAction, rows: list[RunRow]) -> None:
        super().__init__()
        self.action = action
        self.rows = rows


class RefreshRequested(Message):
    """Read the registry now (and let the shared poller ask Slurm if its schedule allows)."""


class WorkFailed(Message):
    """Background work, or the showing of its result, raised: the app says so (tui.workers)."""

    def __init__(self, what: str, error: BaseException) -> None:
        super().__init__()
        self.what = what
        self.error = error
