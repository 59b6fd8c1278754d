"""A registry that never changes between runs (fixed ids, times, values, logs), and helpers to drive the TUI.

The registry is filled the way jobs fill it: sweeps recorded by Registry.add_sweep/mark_queued, spool files
with fixed `t` values ingested by Registry.ingest, Slurm's view stored by Registry.store_job_records, live
controls recorded by Registry.add_control and answered by the job's `control` spool records. The
launcher's own timestamps (when sweeps were recorded and queued) come from the wall clock; they are pinned
to fixed times afterwards, so every screen shows the same thing on every run.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from rich.console import Console
from rich.text import Text
from textual.content import Content
from textual.widgets import DataTable, Input, Static

from slurmml.registry.registry import Registry
from slurmml.slurm.accounting import JobRecord
from slurmml.slurm.commands import CommandResult
from slurmml.tracking.writer import SpoolWriter
from slurmml.tui.model import RunRow

FIXED = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC: the app's "now"
USER = "alice"  # who launched the sweeps, and who the tests' data source says it is
SWEEP_A = "20260101-110000-a1b2"
SWEEP_B = "20260101-113000-c3d4"
LOG_DIR = "sweeps/mnist-grid/.slurmml/logs"  # relative to the test's working directory: shown as is

STDERR = """\
[2026-01-01 11:30:00] slurmml: run 20260101-110000-a1b2-2 on gpu-node03 (job 4100_2)
[2026-01-01 11:30:02] loading mnist (60000 train, 10000 val)
[2026-01-01 11:30:05] epoch 1/20: loss 1.2034 val_acc 0.6120
[2026-01-01 11:35:05] epoch 2/20: loss 0.8123 val_acc 0.7411
[2026-01-01 11:40:05] epoch 3/20: loss 0.5417 val_acc 0.8207
[2026-01-01 11:45:05] epoch 4/20: loss 0.4102 val_acc 0.8569
[2026-01-01 11:50:05] epoch 5/20: loss 0.3500 val_acc 0.8740
"""
STDOUT = "model: cnn (1.2M parameters)\noptimizer: adam lr=0.1\n"


@dataclass(frozen=True)
class Run:
    job_num: int
    overrides: list[str]
    config: dict[str, Any]
    start: Optional[float]  # None: still queued
    end: Optional[tuple[float, str, Optional[str]]] = None  # (time, state, error)
    val_acc: tuple[float, ...] = ()
    loss: tuple[float, ...] = ()
    restarted_at: Optional[float] = None


def config(model: str, lr: float, dataset: str, seed: int = 0) -> dict[str, Any]:
    return {"model": {"name": model, "width": 256 if model == "mlp" else 64}, "dataset": dataset,
            "optimizer": {"name": "adam", "lr": lr}, "epochs": 20, "seed": seed}


def curve(start: float, end: float, n: int) -> tuple[float, ...]:
    """n values from start to end, changing fast first: a training curve."""
    floor = math.exp(-3)
    return tuple(round(end + (start - end) * (math.exp(-3 * i / max(1, n - 1)) - floor) / (1 - floor), 4)
                 for i in range(n))


SWEEPS = {
    SWEEP_A: ("mnist-grid", "4100", FIXED - 3600, {
        0: Run(0, ["model=mlp", "optimizer.lr=0.1"], config("mlp", 0.1, "mnist"), FIXED - 3500,
               (FIXED - 2900, "COMPLETED", None), curve(0.55, 0.912, 20), curve(1.4, 0.231, 20)),
        1: Run(1, ["model=mlp", "optimizer.lr=0.01"], config("mlp", 0.01, "mnist"), FIXED - 3400,
               (FIXED - 3300, "FAILED", "Traceback (most recent call last):\nRuntimeError: loss is nan at step 3"),
               (0.31, 0.38, 0.42), (1.9, 2.7, 5.1, math.nan)),
        2: Run(2, ["model=cnn", "optimizer.lr=0.1"], config("cnn", 0.1, "mnist"), FIXED - 1800, None,
               curve(0.612, 0.874, 5), curve(1.2034, 0.35, 5)),
        3: Run(3, ["model=cnn", "optimizer.lr=0.01"], config("cnn", 0.01, "mnist"), None),
    }),
    SWEEP_B: ("cifar-seeds", "4200", FIXED - 1500, {
        0: Run(0, ["model=resnet", "seed=1"], config("resnet", 0.05, "cifar10", 1), FIXED - 1400,
               (FIXED - 500, "COMPLETED", None), curve(0.41, 0.801, 12), curve(2.1, 0.62, 12)),
        1: Run(1, ["model=resnet", "seed=2"], config("resnet", 0.05, "cifar10", 2), FIXED - 1390, None,
               curve(0.40, 0.77, 8), curve(2.2, 0.7, 8), restarted_at=FIXED - 900),
    }),
}
RUNNING_RUN = f"{SWEEP_A}-2"  # has GPU samples, Slurm's view, log files and live controls
FAILED_RUN = f"{SWEEP_A}-1"
COMPLETED_RUN = f"{SWEEP_A}-0"


def gpu_records(started: float) -> list[dict[str, Any]]:
    records = []
    for i in range(30):
        t = started + 60 * i
        for index in range(2):
            util = 40 + (i * 7 + index * 13) % 55
            records.append({"k": "gpu", "t": t, "gpu": index, "uuid": f"GPU-{index}", "util": float(util),
                            "mem_used": 20_000.0 + 300 * i, "mem_total": 81_920.0, "power": 250.0, "temp": 60.0})
    return records


@dataclass(frozen=True)
class Control:
    """A live control sent to the running run, and the job's answer (None: not answered yet)."""

    id: str
    kind: str
    args: dict[str, Any]
    asked: float
    answer: Optional[dict[str, Any]] = None  # the job's `control` record, less k, t and id
    source: str = "cli"


CONTROLS = (
    Control("c0ffee0000000001", "set", {"values": {"optimizer.lr": 0.01}}, FIXED - 1500,
            {"status": "applied", "step": 2}),
    Control("c0ffee0000000002", "set", {"values": {"model.width": 128}}, FIXED - 1200,
            {"status": "refused", "step": 3, "message": "no callback for model.width (the job registered: optimizer.lr)"},
            source="tui"),
    Control("c0ffee0000000003", "snapshot", {}, FIXED - 60),
)
ANSWER_AFTER_S = 30.0  # the job answers at its next step


def write_spool(path: Path, run_id: str, run: Run) -> None:
    with SpoolWriter(path, handle_sigterm=False) as writer:
        starts = [run.start] + ([run.restarted_at] if run.restarted_at else [])
        for t in starts:
            writer.write({"k": "start", "t": t, "run_id": run_id, "host": "gpu-node03" if run_id == RUNNING_RUN else
                          f"gpu-node0{run.job_num + 1}", "pid": 1000 + run.job_num, "run_dir": f"/scratch/{run_id}",
                          "config": run.config, "overrides": run.overrides, "environment": {"python": "3.11.9"}})
        for name, values in (("val_acc", run.val_acc), ("loss", run.loss)):
            for step, value in enumerate(values):
                writer.write({"k": "m", "t": run.start + 60 * (step + 1), "s": step, "v": {name: value}})
        if run_id == RUNNING_RUN:
            for record in gpu_records(run.start):
                writer.write(record)
            for control in CONTROLS:
                if control.answer is not None:
                    writer.write({"k": "control", "t": control.asked + ANSWER_AFTER_S, "id": control.id,
                                  **control.answer})
        if run.end:
            t, state, error = run.end
            writer.write({"k": "end", "t": t, "state": state, "exit_code": 0 if state == "COMPLETED" else 1,
                          **({"error": error} if error else {})})


def build_registry(folder: Path) -> Path:
    """Fill folder/registry.db and the log files (under folder/LOG_DIR); return the registry's path."""
    path = folder / "registry.db"
    registry = Registry(path)
    (folder / LOG_DIR).mkdir(parents=True, exist_ok=True)
    for sweep_id, (name, job, created, runs) in SWEEPS.items():
        registry.add_sweep({"id": sweep_id, "name": name, "user": USER, "created": created, "argv": ["train.py", "-m"],
                            "cwd": str(folder), "sweep_dir": str(folder / "sweeps" / name), "backend": "slurm"},
                           [{"id": f"{sweep_id}-{n}", "job_num": n, "overrides": run.overrides,
                             "spool_path": str(folder / "spools" / f"{sweep_id}-{n}.jsonl")} for n, run in runs.items()])
        registry.mark_queued({f"{sweep_id}-{n}": (f"{job}_{n}", f"{LOG_DIR}/{job}_{n}_0_log.err") for n in runs})
        with registry.conn:  # the launcher's wall-clock times, pinned
            registry.conn.execute("UPDATE runs SET created = ? WHERE sweep_id = ?", (created, sweep_id))
            registry.conn.execute("UPDATE run_states SET time = ? WHERE source = 'launcher' AND run IN "
                                  "(SELECT run FROM runs WHERE sweep_id = ?)", (created + 5, sweep_id))
        for n, run in runs.items():
            if run.start is not None:
                write_spool(folder / "spools" / f"{sweep_id}-{n}.jsonl", f"{sweep_id}-{n}", run)
    for control in CONTROLS:  # recorded before the job's answers are ingested, as the sender does
        registry.add_control(RUNNING_RUN, control.id, control.kind, control.args, USER, control.source,
                             control.asked, control.asked + 120)
    report = registry.ingest()
    assert report.problems == [], report.problems
    (folder / LOG_DIR / "4100_2_0_log.err").write_text(STDERR)
    (folder / LOG_DIR / "4100_2_0_log.out").write_text(STDOUT)
    (folder / LOG_DIR / "4100_0_0_log.err").write_text("done: val_acc 0.912\n")
    registry.store_job_records([
        JobRecord("4100_2", "RUNNING", "", elapsed_s=1800, timelimit_s=7200, alloc_cpus=8, alloc_gpus=2,
                  req_mem_mb=32_000, node_list="gpu-node03", submit=FIXED - 3600, start=FIXED - 1800,
                  source="sacct", updated=FIXED - 5),
        JobRecord("4100_3", "PENDING", "Priority", timelimit_s=7200, alloc_cpus=8, alloc_gpus=2, req_mem_mb=32_000,
                  submit=FIXED - 3600, source="sacct", updated=FIXED - 5),
    ])
    registry.close()
    return path


class HangingSlurm:
    """The poller's `run`: squeue and sacct that answer (with an error, so nothing changes) only once the
    test sets `answer`, as a slurmctld that takes its time would."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.answer = threading.Event()
        self.calls: list[str] = []

    def __call__(self, argv: list[str], *args: Any, **kwargs: Any) -> CommandResult:
        self.calls.append(argv[0])
        self.asked.set()
        assert self.answer.wait(60), "the test never let Slurm answer"
        return CommandResult(tuple(argv), 1, "", f"{argv[0]}: error: slurmctld is busy")


@pytest.fixture
def utc() -> Any:
    """The detail screen prints local times: make local time UTC for the test."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.fixture
def fixed_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, utc: Any) -> Path:
    monkeypatch.chdir(tmp_path)  # log paths are recorded relative to it
    return build_registry(tmp_path)


@pytest.fixture
def make_app(fixed_registry: Path) -> Callable[..., Any]:
    """SlurmmlApp on the fixed registry at the fixed time, with no timers: nothing changes while a test looks."""
    from slurmml.tui.app import SlurmmlApp
    from slurmml.tui.source import RegistrySource

    def make(actions: Any = "real", read_only: bool = False, user: str = USER, **kwargs: Any) -> SlurmmlApp:
        source = RegistrySource(Registry(fixed_registry), poller=None, local_runs_dir=None, clock=lambda: FIXED)
        source.user = user
        if actions == "real":
            from slurmml.tui.actions import RunActions

            actions = RunActions(source)
        return SlurmmlApp(source, actions, read_only=read_only, refresh_s=0, clock=lambda: FIXED, **kwargs)

    return make


async def settle(pilot: Any, rounds: int = 3) -> None:
    """Let every started worker finish and its results reach the screen."""
    from textual.worker import WorkerCancelled, WorkerState

    for _ in range(rounds):
        await pilot.pause()
        for worker in list(pilot.app.workers):
            if worker.state in (WorkerState.RUNNING, WorkerState.PENDING) and worker._task is not None:
                try:
                    await worker.wait()
                except WorkerCancelled:
                    pass
        await pilot.pause()


async def wait_for(pilot: Any, predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition",
                   interval_s: float = 0.05) -> Any:
    """Poll the running app until predicate() is true (a deadline, never a measured duration)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await pilot.pause(interval_s)


# -- reading what the app shows --------------------------------------------------------------------------------
def screen_lines(table: Any) -> list[str]:
    """What the runs table draws, line by line (header first)."""
    return ["".join(segment.text for segment in table.render_line(y)).rstrip() for y in range(table.size.height)]


def shown_ids(table: Any) -> list[str]:
    return [line.run_id for line in table.lines if isinstance(line, RunRow)]


def facts_of(widget: Static) -> dict[str, str]:
    """The detail's facts table as name -> value."""
    pairs = (line.strip().split(None, 1) for line in text_of(widget).splitlines() if line.strip())
    return {pair[0]: pair[1].strip() if len(pair) > 1 else "" for pair in pairs}


def text_of(widget: Static) -> str:
    """What a Static shows, as plain text: a str is read the way the widget reads it (as markup, or not)."""
    visual = widget.visual
    shown = Text(visual.plain) if isinstance(visual, Content) else widget.content
    console = Console(width=200, record=True, color_system=None, file=io.StringIO())
    console.print(shown)
    return console.export_text()


def notes(app: Any) -> list[tuple[str, str]]:
    return [(n.severity, n.message) for n in app._notifications]


async def go_to(pilot: Any, run_id: str) -> None:
    table = pilot.app.runs_screen.table
    table.action_jump(0)
    for _ in range(len(table.lines)):
        if table.current is not None and table.current.run_id == run_id:
            return
        await pilot.press("down")
    raise AssertionError(f"{run_id} is not shown")


async def type_filter(pilot: Any, text: str, keys: bool = False) -> None:
    """/ then the text (typed key by key, or pasted in one go), then enter."""
    await pilot.press("slash")
    field = pilot.app.runs_screen.query_one("#filter", Input)
    assert field.has_focus
    if keys:
        field.value = ""
        await pilot.press(*text)
    else:
        field.value = text
    await pilot.press("enter")
    await settle(pilot)
    assert pilot.app.runs_screen.table.has_focus


def board(screen: Any) -> list[list[str]]:
    table = screen.query_one("#board", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def run_async(coroutine: Any) -> Any:
    """pytest-asyncio is not installed: plain tests run their coroutine here."""
    return asyncio.run(coroutine)
