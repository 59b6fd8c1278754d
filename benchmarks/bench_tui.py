"""The TUI on a 10,000-run registry: first paint, filter keystrokes, scrolling and memory, headless.

One run on this machine, no cluster needed. A registry of --runs x --steps x 4 metrics (default
10,000 x 1,000 = 40M points) is built with bench_registry.py's builders and given what a real one has
(config params, Hydra overrides, Slurm job ids, hosts, mixed final states, 100 running runs with GPU
samples). Each measurement runs in a fresh Python process, so imports and memory count:

  slurmml  `SlurmmlApp(RegistrySource.open(db, poll=False), None, read_only=True, refresh_s=0)`
           (--refresh-s 2 to refresh as `slurmml tui` does), driven with `App.run_test(size=(120, 40))`;
  peer     the off-the-shelf way: a minimal Textual app with textual's own `DataTable` holding the same
           10,000 rows (run, state, job, elapsed, overrides, 4 metrics) read through the same
           `RegistrySource.snapshot()`, and an `Input` whose keystrokes do `clear()` + `add_rows()` of the
           rows whose text contains the filter.

Measured in each process: (a) first paint, from the process start and from the first line of this
file, until the first frame that shows table rows; (b) filter keystrokes, from the key press until a
frame shows the table filtered (plain words; and for slurmml, `optim.lr<0.001`-style expressions that the
registry answers in a worker thread); (c) PageDown / End / Home on the 10,000-row table; peak RSS.
A frame is counted when the screen's compositor update reaches the driver; it is also turned into the
terminal's escape sequences, as a real terminal driver does, and then thrown away.

Usage: `.venv/bin/python benchmarks/bench_tui.py [--runs 1000 --steps 50]`; `--keep` keeps the built
registry, `--db PATH` measures an existing one. The last line gives the ratios peer/slurmml.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # a measuring child counts from here: everything below is imported after it

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT_MARK = "BENCH_TUI_RESULT "
SIZE = (120, 40)
GOALS = {"first_paint_s": 1.5, "keystroke_ms": 100.0, "rss_mb": 300.0}
RUNNING_RUNS = 100  # the newest runs are still running, with GPU samples
JOB_BASE = 4_100_000

# Keystrokes typed into the filter, one at a time. "\b" is backspace. Both apps get the same words.
TEXT_KEYS = list("cnn") + ["\b"] * 3 + list("failed") + ["\b"] * 6 + list("mlp") + ["\b"] * 3
# slurmml only: expressions answered by the registry (a SQL query in a worker thread), with words around them
EXPRESSION_KEYS = list("optim.lr<0.001 name=cnn") + ["\b"] * 9
SCROLL_KEYS = ["pagedown"] * 10 + ["last", "first"]
# the keys for the first and the last row: RunTable binds home/end; DataTable binds those to columns, ctrl+ to rows
ROW_KEYS = {"slurmml": {"first": "home", "last": "end"}, "peer": {"first": "ctrl+home", "last": "ctrl+end"}}


FILTER_WORK: list[tuple[float, float]] = []  # (start, end) of the app's own filter code on the UI thread
SQL_WORK: list[tuple[float, float]] = []  # (start, end) of the registry queries that answer expressions
GC_PAUSES: list[tuple[float, float]] = []  # (start, seconds) of each generation-2 collection


class BenchError(Exception):
    """A measurement went wrong: reported as one line, exit status 1."""


# ============================================================================ the measuring child


def _key_name(char: str) -> str:
    return {"\b": "backspace", " ": "space"}.get(char, char)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Probe:
    """Watches frames and table renders without changing what the app does.

    - `App._display` (which the screen calls with each compositor update) is wrapped: the update is
      turned into escape sequences, as the terminal driver would, and the time is taken after that.
    - the table class's `render_lines` is wrapped: it notes the filter generation, the row count and
      the cursor that the table was rendered with. A frame "shows the table" when the table was
      rendered since the previous frame, in a settled state (DataTable: its new rows already sized),
      and the frame's update covers the table's rows (not only, say, its scrollbar).
    """

    def __init__(self, app: Any, table_class: type, table_of: Callable[[], Any],
                 state: Callable[[], tuple[int, int, int, bool]], first_id: Callable[[], str]) -> None:
        import asyncio

        from textual._compositor import ChopsUpdate, CompositorUpdate

        self.app = app
        self.table_of = table_of
        self.state = state  # () -> (filter generation, rows in the table, cursor row, settled)
        self.first_id = first_id
        self.pending: Optional[tuple[int, int, int, bool]] = None
        self.frames = 0
        self.table_frames: list[tuple[float, int, int, int]] = []  # (time, generation, rows, cursor)
        self.first_paint: Optional[float] = None
        self.first_paint_frame = 0
        self.first_paint_shows_row = False
        self.changed = asyncio.Event()
        probe = self

        original_render = table_class.render_lines

        def render_lines(widget: Any, crop: Any) -> Any:
            strips = original_render(widget, crop)
            probe.pending = probe.state()
            return strips

        table_class.render_lines = render_lines
        original_display = app._display
        console = app.console

        def display(screen: Any, renderable: Any) -> None:
            original_display(screen, renderable)
            if renderable is None or app._batch_count:
                return
            text = renderable.render_segments(console) if isinstance(renderable, CompositorUpdate) else ""
            now = time.perf_counter()
            probe.frames += 1
            rendered, probe.pending = probe.pending, None
            if rendered is None or not rendered[3] or not covers_rows(renderable):
                return
            probe.table_frames.append((now, *rendered[:3]))
            if probe.first_paint is None and rendered[1] > 0:
                probe.first_paint = now
                probe.first_paint_frame = probe.frames
                probe.first_paint_shows_row = probe.first_id()[:20] in text
            probe.changed.set()

        app._display = display

        def covers_rows(update: Any) -> bool:
            """Whether the update redraws part of the table's body: its lines under the header, left of
            its vertical scrollbar."""
            if not isinstance(update, ChopsUpdate):
                return True  # a LayoutUpdate redraws the whole screen
            body = probe.table_of().scrollable_content_region
            top, bottom, left, right = body.y + 1, body.bottom, body.x, body.right
            return any(top <= y < bottom and x1 < right and x2 > left for y, x1, x2 in update.spans)

    async def wait_for(self, accept: Callable[[tuple[float, int, int, int]], bool], after: int, what: str,
                       timeout: float = 60.0) -> tuple[float, int, int, int]:
        """The first table frame at index >= `after` that `accept` takes."""
        import asyncio

        deadline = time.perf_counter() + timeout
        index = after
        while True:
            while index < len(self.table_frames):
                frame = self.table_frames[index]
                index += 1
                if accept(frame):
                    return frame
            left = deadline - time.perf_counter()
            if left <= 0:
                raise BenchError(f"no frame within {timeout:.0f} s: {what}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=min(left, 1.0))
            except asyncio.TimeoutError:
                pass


def _recorded(function: Callable[..., Any], spans: list[tuple[float, float]]) -> Callable[..., Any]:
    def recorded(*args: Any, **kwargs: Any) -> Any:
        begin = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spans.append((begin, time.perf_counter()))

    return recorded


def _peer_app_class() -> type:
    """The off-the-shelf TUI: DataTable + Input, filtered with clear() + add_rows()."""
    from textual import on, work
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.widgets import DataTable, Footer, Input

    from slurmml.tui.model import cell_text, columns_for

    keep = ("run_id", "state", "slurm_job_id", "elapsed", "overrides")

    class PeerApp(App):
        BINDINGS = [Binding("slash", "filter", "Filter"), Binding("q", "quit", "Quit")]

        def __init__(self, source: Any) -> None:
            super().__init__()
            self.source = source
            self.rows: list[tuple[tuple[str, ...], str]] = []  # (cells, lower-case text of the row)
            self.generation = 0

        def compose(self) -> ComposeResult:
            yield DataTable(cursor_type="row", id="runs")
            yield Input(placeholder="filter", id="filter")
            yield Footer()

        def on_mount(self) -> None:
            self.query_one(DataTable).focus()
            self.load()

        @work(thread=True)
        def load(self) -> None:
            snapshot = self.source.snapshot()
            self.call_from_thread(self._show_snapshot, snapshot)

        def _show_snapshot(self, snapshot: Any) -> None:
            columns = [c for c in columns_for(snapshot.rows, snapshot.metrics) if c.key in keep or c.metric]
            now = time.time()
            for row in snapshot.rows:
                cells = tuple(cell_text(row, column, now) for column in columns)
                self.rows.append((cells, " ".join(cells).lower()))
            table = self.query_one(DataTable)
            table.add_columns(*[column.title for column in columns])
            table.add_rows([cells for cells, _ in self.rows])
            self.generation += 1

        def action_filter(self) -> None:
            self.query_one("#filter", Input).focus()

        @on(Input.Changed, "#filter")
        def filter_changed(self, event: Input.Changed) -> None:
            begin = time.perf_counter()
            text = event.value.lower()
            table = self.query_one(DataTable)
            table.clear()
            table.add_rows([cells for cells, haystack in self.rows if text in haystack])
            self.generation += 1
            FILTER_WORK.append((begin, time.perf_counter()))

    return PeerApp


async def _drive(kind: str, app: Any, probe: Probe, source: Any, marks: dict[str, float]) -> dict[str, Any]:
    import asyncio

    from textual.widgets import Input

    out: dict[str, Any] = {}
    async with app.run_test(size=SIZE) as pilot:
        await probe.wait_for(lambda f: f[2] > 0, 0, "first paint with table rows")
        out["rss_after_paint"] = _rss_bytes()
        out["frames_until_paint"] = probe.first_paint_frame
        # whatever the app does after its first paint (slurmml: one refresh, i.e. an ingest pass) ends first
        await app.workers.wait_for_complete()
        await pilot.pause()
        marks["background_done"] = time.perf_counter()

        if kind == "slurmml":
            screen = app.runs_screen
            table = screen.table
            out["rows_total"] = table.row_count
            screen.apply_view = _recorded(screen.apply_view, FILTER_WORK)  # filter, sort, table.show, status line
            source.matching_ids = _recorded(source.matching_ids, SQL_WORK)  # the registry query, in a worker
        else:
            from textual.widgets import DataTable

            table = app.query_one(DataTable)
            out["rows_total"] = table.row_count

        async def press(key: str, accept: Callable[[tuple, tuple], bool]) -> tuple[float, float, float]:
            """(key press until the frame, time in the app's own filter code and in registry queries meanwhile)"""
            after = len(probe.table_frames)
            before = probe.state()
            start = time.perf_counter()
            await pilot.press(key)
            frame = await probe.wait_for(lambda f: f[0] > start and accept(f, before), after, f"{kind}: key {key!r}")
            work = sum(min(end, frame[0]) - begin for begin, end in FILTER_WORK if start <= begin < frame[0])
            query = sum(min(end, frame[0]) - begin for begin, end in SQL_WORK if start <= begin < frame[0])
            return frame[0] - start, work, query

        scroll: dict[str, list[float]] = {}
        for key in SCROLL_KEYS:
            latency, _, _ = await press(ROW_KEYS[kind].get(key, key), lambda f, before: f[3] != before[2])
            scroll.setdefault(key, []).append(latency)
        out["scroll"] = scroll

        await pilot.press("slash")
        await pilot.pause()
        field = app.screen.query_one("#filter", Input)
        if kind == "slurmml":
            from slurmml.tui.model import parse_filter_text
        plans = [("text", TEXT_KEYS)] + ([("expression", EXPRESSION_KEYS)] if kind == "slurmml" else [])
        for name, keys in plans:
            typed = []
            for char in keys:
                value_before = field.value
                latency, work, query = await press(_key_name(char), lambda f, before: f[1] > before[0])
                await pilot.pause()
                sql = False
                if kind == "slurmml":
                    expressions = parse_filter_text(field.value).expressions
                    sql = bool(expressions) and expressions != parse_filter_text(value_before).expressions
                typed.append({"key": char, "value": field.value, "latency": latency, "work": work, "query": query,
                              "rows": table.row_count, "sql": sql})
            out[name] = typed
            if name == "text" and (field.value or table.row_count != out["rows_total"]):
                raise BenchError(f"{kind}: after the words and their backspaces the filter reads {field.value!r} "
                                 f"and {table.row_count} rows are shown, not {out['rows_total']}")
        await asyncio.sleep(0)
    return out


def child_main(kind: str, db: Path, spawned_at: float, refresh_s: float) -> int:
    import asyncio
    import gc
    import resource

    marks = {"t0": _T0}
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        elif info["generation"] == 2:
            GC_PAUSES.append((gc_started[0], time.perf_counter() - gc_started[0]))

    gc.callbacks.append(on_gc)
    if kind == "slurmml":
        from slurmml.tui.app import SlurmmlApp
        from slurmml.tui.run_table import RunTable as table_class
        from slurmml.tui.source import RegistrySource
    else:
        from textual.widgets import DataTable as table_class

        from slurmml.tui.source import RegistrySource
        PeerApp = _peer_app_class()
    marks["imported"] = time.perf_counter()
    source = RegistrySource.open(db, poll=False)
    marks["opened"] = time.perf_counter()
    snapshots: list[tuple[float, float]] = []
    read_snapshot = source.snapshot

    def timed_snapshot() -> Any:
        begin = time.perf_counter()
        snapshot = read_snapshot()
        snapshots.append((begin, time.perf_counter()))
        return snapshot

    source.snapshot = timed_snapshot

    if kind == "slurmml":
        app = SlurmmlApp(source, None, read_only=True, refresh_s=refresh_s)

        found: list[Any] = []

        def state() -> tuple[int, int, int, bool]:
            if not found:
                found.append(app.screen_stack[0])
                found.append(found[0].query_one(table_class))
            screen, table = found
            return screen.filter_generation, len(table.lines), table.cursor, True

        def table_of() -> Any:
            state()
            return found[1]

        def first_id() -> str:
            lines = table_of().lines
            return lines[0].run_id if lines else "?"
    else:
        app = PeerApp(source)

        found = []

        def state() -> tuple[int, int, int, bool]:
            if not found:
                found.append(app.query_one(table_class))
            table = found[0]
            # new rows get their column widths and heights on the table's next idle: until then a frame
            # can show the rows with columns not yet sized, which does not count
            return app.generation, table.row_count, table.cursor_row, not table._require_update_dimensions

        def table_of() -> Any:
            state()
            return found[0]

        def first_id() -> str:
            table = table_of()
            return str(table.get_row_at(0)[0]) if table.row_count else "?"

    shows: list[tuple[float, float]] = []
    if kind == "slurmml":  # the runs view's method that puts a snapshot's rows into its table, on the UI thread
        from slurmml.tui.runs_screen import RunsScreen

        owner, name = RunsScreen, "show_snapshot"
    else:
        owner, name = app, "_show_snapshot"
    show = getattr(owner, name)

    def timed_show(*args: Any) -> None:
        begin = time.perf_counter()
        show(*args)
        shows.append((begin, time.perf_counter()))

    setattr(owner, name, timed_show)
    probe = Probe(app, table_class, table_of, state, first_id)
    out = asyncio.run(_drive(kind, app, probe, source, marks))
    out.update({
        "kind": kind,
        "startup_s": _T0 - spawned_at,  # fork/exec, interpreter start, site, this file's first line
        "import_s": marks["imported"] - _T0,
        "open_s": marks["opened"] - marks["imported"],
        "snapshot_s": [end - begin for begin, end in snapshots],
        "snapshot_at": [begin - _T0 for begin, _ in snapshots],
        "show_s": [end - begin for begin, end in shows],
        "first_paint_s": probe.first_paint - _T0,
        "first_paint_shows_row": probe.first_paint_shows_row,
        "background_done_s": marks["background_done"] - _T0,
        "gc2_keys": [seconds for begin, seconds in GC_PAUSES if begin >= marks["background_done"]],
        "gc2_all": [seconds for _, seconds in GC_PAUSES],
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "frames": probe.frames,
    })
    print(RESULT_MARK + json.dumps(out), flush=True)
    return 0


# ============================================================================ the parent


def note(text: str) -> None:
    import datetime as dt

    print(f"{dt.datetime.now():%H:%M:%S} {text}", file=sys.stderr, flush=True)


def hydra_overrides(config: dict[str, Any]) -> list[str]:
    """What a Hydra multirun over these keys records as a run's overrides."""
    model, optim = config.get("model", {}), config.get("optim", {})
    out = []
    if "name" in model:
        out.append(f"model.name={model['name']}")
    if "layers" in model:
        out.append(f"model.layers={model['layers']}")
    if "lr" in optim:
        out.append(f"optim.lr={optim['lr']:.3g}")
    if "weight_decay" in optim:
        out.append(f"optim.weight_decay={optim['weight_decay']}")
    if "seed" in config:
        out.append(f"seed={config['seed']}")
    return out


def dress_registry(db: Path) -> dict[str, Any]:
    """What the builders leave out and a registry the TUI meets has, in the shapes that ingest, mark_queued,
    mark_final and the poller write: params (when missing), Hydra overrides, Slurm array job ids, hosts,
    mixed final states, times in the past (one sweep every two days; the builders date runs in 2027),
    spool offsets for ingested runs, and the newest runs still running, with GPU samples."""
    import random
    import sqlite3

    from bench_registry import SPOOL_BYTES_PER_STEP

    from slurmml.registry.ingest import _flatten, _number

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    rows = conn.execute("SELECT run, sweep_id, job_num, config FROM runs ORDER BY run").fetchall()
    sweeps = {sweep: index for index, sweep in enumerate(sorted({row[1] for row in rows}))}
    need_params = conn.execute("SELECT 1 FROM params LIMIT 1").fetchone() is None
    rng = random.Random(20261123)
    now = time.time()
    created = {sweep: now - 2 * 86400 * (len(sweeps) - index) for sweep, index in sweeps.items()}
    params, updates, samples = [], [], []
    running_from = len(rows) - min(RUNNING_RUNS, len(rows) // 10)
    for index, (run, sweep_id, job_num, config_text) in enumerate(rows):
        config = json.loads(config_text) if config_text else {}
        if need_params and config:
            params.extend((run, k, json.dumps(v), _number(v) if not isinstance(v, (str, bool)) else None,
                           type(v).__name__) for k, v in _flatten(config))
        job = f"{JOB_BASE + 1000 * sweeps[sweep_id]}_{job_num}"
        host = f"gpu{rng.randrange(64):03d}"
        exit_code, error, spool = 0, None, True
        if index >= running_from:
            state, exit_code, spool = "RUNNING", None, False  # no spool here: ingest would say its folder is gone
            started, ended = now - rng.uniform(600, 36_000), None
            for k in range(30):
                for gpu in range(2):
                    samples.append((run, now - 10 * (29 - k), gpu, f"GPU-{run}-{gpu}", rng.uniform(40, 100),
                                    rng.uniform(10e3, 70e3), 80e3, rng.uniform(150, 400), rng.uniform(40, 80)))
        else:
            started = created[sweep_id] + rng.uniform(0, 86400)
            ended = started + rng.uniform(600, 4 * 3600)
            draw = rng.random()
            state = "COMPLETED" if draw < 0.90 else "FAILED" if draw < 0.95 else "TIMEOUT" if draw < 0.98 else "CANCELLED"
            if state == "FAILED":
                exit_code, error = 1, "RuntimeError: CUDA out of memory"
            elif state != "COMPLETED":
                exit_code, error = None, f"{state} by Slurm"
        updates.append((json.dumps(hydra_overrides(config)) if config else None, job, host, state, exit_code, error,
                        created[sweep_id], started, ended, spool, run))
    conn.execute("BEGIN IMMEDIATE")
    if params:
        conn.executemany("INSERT OR REPLACE INTO params(run, key, value, num, type) VALUES (?, ?, ?, ?, ?)", params)
    conn.executemany("UPDATE runs SET overrides = coalesce(?, overrides), slurm_job_id = ?, host = ?, state = ?, "
                     "exit_code = ?, error = ?, created = ?, started = ?, ended = ?, "
                     "spool_path = CASE WHEN ? THEN spool_path END WHERE run = ?", updates)
    conn.executemany("UPDATE sweeps SET created = ? WHERE id = ?", [(when, sweep) for sweep, when in created.items()])
    conn.execute("INSERT OR IGNORE INTO spool_offsets(run, offset, updated) "
                 "SELECT r.run, ? * (SELECT max(count) FROM metric_summary s WHERE s.run = r.run), r.ended "
                 "FROM runs r WHERE r.spool_path IS NOT NULL", (SPOOL_BYTES_PER_STEP,))
    conn.executemany("INSERT INTO system_samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", samples)
    conn.execute("COMMIT")
    conn.close()
    return {"params_added": len(params), "running": len(rows) - running_from}


def registry_facts(db: Path) -> dict[str, Any]:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        points = conn.execute("SELECT coalesce(sum(count), 0) FROM metric_summary").fetchone()[0]
        params = conn.execute("SELECT count(*) FROM params").fetchone()[0]
        states = dict(conn.execute("SELECT state, count(*) FROM runs GROUP BY state ORDER BY 2 DESC").fetchall())
        sweeps = conn.execute("SELECT count(*) FROM sweeps").fetchone()[0]
    finally:
        conn.close()
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    return {"runs": runs, "points": points, "params": params, "states": states, "sweeps": sweeps, "bytes": size}


def run_child(kind: str, db: Path, home: Path, timeout: float, refresh_s: float) -> dict[str, Any]:
    env = {**os.environ, "SLURMML_HOME": str(home), "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    env.pop("TEXTUAL", None)  # no devtools
    # bytecode is cached, as in an installed environment (this one may set PYTHONDONTWRITEBYTECODE); the
    # cache lives in the temporary directory, so the first process compiles and later ones read it
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(home.parent / "pycache")
    spawned_at = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", kind, "--db", str(db),
                               "--spawned-at", repr(spawned_at), "--refresh-s", repr(refresh_s)], capture_output=True, text=True, env=env,
                              timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"the {kind} process did not finish within {timeout:.0f} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
        raise BenchError(f"the {kind} process failed (exit status {done.returncode}):\n  " + "\n  ".join(tail))
    result = json.loads(lines[-1][len(RESULT_MARK):])
    if not result["first_paint_shows_row"]:
        raise BenchError(f"{kind}: the first frame counted as the first paint does not show the first run's id")
    return result


# ---------------------------------------------------------------------------- report


def ms(seconds: Optional[float]) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:,.0f} ms" if seconds >= 0.1 else f"{seconds * 1e3:.1f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:.2f} s"


def mb(size: Optional[float]) -> str:
    return "n/a" if size is None else f"{size / 1e6:,.0f} MB"


def goal(ok: bool) -> str:
    return "met" if ok else "[bold red]NOT met[/bold red]"


def median(values: list[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def quantile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """First paint: median of the runs after the first (the first is shown apart). Keystrokes and scrolling:
    every press of the runs after the first, pooled. Memory: the largest of all runs."""
    timed = results[1:] or results
    paint = [r["startup_s"] + r["first_paint_s"] for r in timed]
    text = [k["latency"] for r in timed for k in r["text"]]
    narrowing = [k["latency"] for r in timed for k in r["text"] if k["key"] != "\b"]
    widening = [k["latency"] for r in timed for k in r["text"] if k["key"] == "\b"]
    expression = [k["latency"] for r in timed for k in r.get("expression", [])]
    sql = [k["latency"] for r in timed for k in r.get("expression", []) if k["sql"]]
    text_work = [k["work"] for r in timed for k in r["text"]]
    sql_query = [k["query"] for r in timed for k in r.get("expression", []) if k["sql"]]
    sql_work = [k["work"] for r in timed for k in r.get("expression", []) if k["sql"]]
    out = {
        "reps": len(results), "timed_reps": len(timed),
        "paint": median(paint), "paint_first": results[0]["startup_s"] + results[0]["first_paint_s"],
        "paint_all": [r["startup_s"] + r["first_paint_s"] for r in results],
        "paint_t0": median([r["first_paint_s"] for r in timed]),
        "startup": median([r["startup_s"] for r in timed]),
        "import": median([r["import_s"] for r in timed]),
        "open": median([r["open_s"] for r in timed]),
        "snapshot_at": median([r["snapshot_at"][0] for r in timed]),
        "snapshot": median([r["snapshot_s"][0] for r in timed]),
        "show": median([r["show_s"][0] for r in timed]),
        "background": median([r["background_done_s"] for r in timed]),
        "snapshots": max(len(r["snapshot_s"]) for r in results),
        "rss_paint": max(r["rss_after_paint"] for r in results),
        "rss_peak": max(r["peak_rss"] for r in results),
        "rows": results[0]["rows_total"],
        "text_work": text_work, "sql_query": sql_query, "sql_work": sql_work,
        "gc2_keys": [p for r in timed for p in r["gc2_keys"]], "gc2_all": [p for r in timed for p in r["gc2_all"]],
        "text": text, "narrowing": narrowing, "widening": widening, "expression": expression, "sql": sql,
        "text_keys": len(TEXT_KEYS),
        "rows_after": [k["rows"] for k in results[0]["text"]],
        "rows_after_expression": [k["rows"] for k in results[0].get("expression", [])],
    }
    for key in ("pagedown", "last", "first"):
        out[key] = [t for r in timed for t in r["scroll"][key]]
    return out


def report(args: argparse.Namespace, facts: dict[str, Any], build: Optional[Any], dressed: Optional[dict],
           mine: dict[str, Any], peer: dict[str, Any]) -> None:
    import datetime as dt
    import socket
    import sqlite3

    import textual
    from rich.console import Console
    from rich.table import Table

    import slurmml
    from bench_registry import slurmml_source

    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    print(f"slurmml {slurmml.__version__} TUI benchmark; textual {textual.__version__}; Python {sys.version.split()[0]}, "
          f"SQLite {sqlite3.sqlite_version}")
    print(slurmml_source())
    print(f"{dt.datetime.now():%Y-%m-%d %H:%M}, {socket.gethostname()}, {os.cpu_count()} cores; "
          f"headless, terminal {SIZE[0]}x{SIZE[1]}; slurmml refresh_s={args.refresh_s:g}; registry {args.db_path}")
    before, after = args.load_before, args.load_after
    print(f"load average (1, 5 min) before the measurements: {before[0]:.2f}, {before[1]:.2f}; after: {after[0]:.2f}, "
          f"{after[1]:.2f} (the measuring processes themselves add about 1)"
          + ("; other work was running on this machine, the figures may be high" if before[0] > 0.5 or after[1] > 1.6
             else ""))
    states = ", ".join(f"{n:,} {s.lower()}" for s, n in facts["states"].items())
    print(f"registry: {facts['runs']:,} runs in {facts['sweeps']} sweeps ({states}), {facts['points']:,} metric points, "
          f"{facts['params']:,} params, {facts['bytes'] / 1e9:.2f} GB on disk; "
          + (f"built by {build.how} in {build.seconds:.0f} s" + (", then dressed (states, overrides, job ids, hosts"
             + (", params" if dressed and dressed["params_added"] else "") + ")" if dressed else "")
             if build else "given with --db"))

    table = Table(show_lines=False)
    table.add_column("measure")
    table.add_column("slurmml tui", justify="right")
    table.add_column("peer: DataTable", justify="right")
    table.add_column("goal", justify="right")
    n = mine["timed_reps"]
    table.add_row(f"(a) first paint, from process start: median of {n} (first run)",
                  f"{secs(mine['paint'])} ({secs(mine['paint_first'])})",
                  f"{secs(peer['paint'])} ({secs(peer['paint_first'])})",
                  f"< {GOALS['first_paint_s']} s: {goal(mine['paint'] < GOALS['first_paint_s'])}")
    table.add_row("(a)   interpreter start, until this file's first line", ms(mine["startup"]), ms(peer["startup"]), "")
    table.add_row("(a)   imports (textual, tui / DataTable)", ms(mine["import"]), ms(peer["import"]), "")
    table.add_row("(a)   RegistrySource.open()", ms(mine["open"]), ms(peer["open"]), "")
    table.add_row("(a)   app start: until the snapshot worker starts", ms(mine["snapshot_at"] - mine["import"] - mine["open"]),
                  ms(peer["snapshot_at"] - peer["import"] - peer["open"]), "")
    table.add_row("(a)   RegistrySource.snapshot() (worker thread)", ms(mine["snapshot"]), ms(peer["snapshot"]), "")
    table.add_row("(a)   rows into the table (UI thread)", ms(mine["show"]), ms(peer["show"]), "")
    table.add_row("(a)   after that, until the frame", ms(mine["paint_t0"] - mine["snapshot_at"] - mine["snapshot"] - mine["show"]),
                  ms(peer["paint_t0"] - peer["snapshot_at"] - peer["snapshot"] - peer["show"]), "")
    table.add_row("(a) background work done (first refresh), from process start",
                  secs(mine["startup"] + mine["background"]), secs(peer["startup"] + peer["background"]), "")
    table.add_section()
    rows = mine["rows"]
    limit = GOALS["keystroke_ms"] / 1e3

    def key_goal(values: list[float]) -> str:
        return (f"< {GOALS['keystroke_ms']:.0f} ms: median {goal(median(values) < limit)}, "
                f"max {goal(max(values) < limit)}")

    def spread(values: list[float]) -> str:
        return f"{ms(median(values))} | {ms(quantile(values, .9))} | {ms(max(values))}"

    table.add_row(f"(b) filter keystroke, words: median | 90% | max of {len(mine['text'])} | {len(peer['text'])}",
                  spread(mine["text"]), spread(peer["text"]), key_goal(mine["text"]))
    table.add_row("(b)   typing a letter: median | max", f"{ms(median(mine['narrowing']))} | {ms(max(mine['narrowing']))}",
                  f"{ms(median(peer['narrowing']))} | {ms(max(peer['narrowing']))}", "")
    table.add_row("(b)   backspace (more rows come back): median | max",
                  f"{ms(median(mine['widening']))} | {ms(max(mine['widening']))}",
                  f"{ms(median(peer['widening']))} | {ms(max(peer['widening']))}", "")
    table.add_row("(b)   of which the app's filter code (UI thread): median | max",
                  f"{ms(median(mine['text_work']))} | {ms(max(mine['text_work']))}",
                  f"{ms(median(peer['text_work']))} | {ms(max(peer['text_work']))}", "")
    table.add_row(f"(b) filter keystroke, expressions: median | 90% | max of {len(mine['expression'])}",
                  spread(mine["expression"]), "n/a", key_goal(mine["expression"]))
    table.add_row(f"(b)   answered by a registry query: median | 90% | max of {len(mine['sql'])}",
                  spread(mine["sql"]), "n/a", "")
    table.add_row("(b)     of which query (worker) | filter code (UI thread): medians",
                  f"{ms(median(mine['sql_query']))} | {ms(median(mine['sql_work']))}", "n/a", "")
    gc_mine, gc_peer = mine["gc2_keys"], peer["gc2_keys"]
    table.add_row("(b, c) gc generation-2 collections during the keys: count | longest",
                  f"{len(gc_mine)} | {ms(max(gc_mine)) if gc_mine else '-'}",
                  f"{len(gc_peer)} | {ms(max(gc_peer)) if gc_peer else '-'}", "")
    table.add_section()
    table.add_row(f"(c) PageDown on {rows:,} rows: median | max of {len(mine['pagedown'])}",
                  f"{ms(median(mine['pagedown']))} | {ms(max(mine['pagedown']))}",
                  f"{ms(median(peer['pagedown']))} | {ms(max(peer['pagedown']))}", "")
    table.add_row("(c) last row | first row: median (End, Home; peer: ctrl+End, ctrl+Home)",
                  f"{ms(median(mine['last']))} | {ms(median(mine['first']))}",
                  f"{ms(median(peer['last']))} | {ms(median(peer['first']))}", "")
    table.add_section()
    table.add_row("RSS after the first paint (largest run)", mb(mine["rss_paint"]), mb(peer["rss_paint"]), "")
    table.add_row("peak RSS (ru_maxrss, largest run)", mb(mine["rss_peak"]), mb(peer["rss_peak"]),
                  f"< {GOALS['rss_mb']:.0f} MB: {goal(mine['rss_peak'] / 1e6 < GOALS['rss_mb'])}")
    out.print(table)
    print(f"Each app ran {mine['reps']} times, each time in a new process, slurmml and peer in turn; the first slurmml "
          "process compiles the bytecode (cached in the temporary directory for the others). First paint: median of the "
          "runs after the first; keystrokes and keys: every press of those runs.")
    print("first paint, every run (s): slurmml " + " ".join(f"{v:.2f}" for v in mine["paint_all"])
          + " | peer " + " ".join(f"{v:.2f}" for v in peer["paint_all"]))
    print("words typed: " + repr("".join(TEXT_KEYS).replace("\b", "⌫")) + ", rows shown after each: "
          + " ".join(str(r) for r in mine["rows_after"])
          + ("" if peer["rows_after"] == mine["rows_after"] else
             " (peer, which searches the cells it shows: " + " ".join(str(r) for r in peer["rows_after"]) + ")"))
    print("expressions typed (slurmml): " + repr("".join(EXPRESSION_KEYS).replace("\b", "⌫"))
          + ", rows shown after each: " + " ".join(str(r) for r in mine["rows_after_expression"]))
    paint = peer["paint"] / mine["paint"]
    keys = median(peer["text"]) / median(mine["text"])
    keys_max = max(peer["text"]) / max(mine["text"])
    rss = peer["rss_peak"] / mine["rss_peak"]
    print(f"ratios: first_paint peer/slurmml={paint:.1f}x  keystroke_median peer/slurmml={keys:.1f}x  "
          f"keystroke_max peer/slurmml={keys_max:.1f}x  peak_rss peer/slurmml={rss:.1f}x", flush=True)


# ---------------------------------------------------------------------------- main


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the registry (default 10000)")
    parser.add_argument("--steps", type=int, default=1_000, help="steps per run, 4 metrics each (default 1000)")
    parser.add_argument("--build", choices=("bulk", "ingest"), default="bulk",
                        help="how bench_registry.py builds the registry: bulk insert (default) or spools + ingest")
    parser.add_argument("--db", type=Path, default=None,
                        help="measure this registry file instead of building one (it is not changed by the build "
                             "steps; the TUI's own refresh may ingest its spools)")
    parser.add_argument("--reps", type=int, default=5, help="processes per app (default 5; the first is shown apart)")
    parser.add_argument("--refresh-s", type=float, default=0.0,
                        help="slurmml's registry refresh interval during the measurement (default 0: off; "
                             "`slurmml tui` refreshes every 2 s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per process (default 600)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing spools (--build ingest)")
    parser.add_argument("--tmp", type=Path, default=None, help="where to make the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (and the registry in it)")
    parser.add_argument("--child", choices=("slurmml", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--spawned-at", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        try:
            return child_main(args.child, args.db, args.spawned_at if args.spawned_at is not None else _T0,
                              args.refresh_s)
        except BenchError as error:
            print(f"bench_tui: {error}", file=sys.stderr)
            return 1
    if min(args.runs, args.steps, args.reps) < 1:
        parser.error("counts must be at least 1")
    if args.db is not None and not args.db.is_file():
        parser.error(f"--db {args.db}: no such file")

    sys.path.insert(0, str(HERE))
    try:
        import bench_registry
        import textual  # noqa: F401
        import slurmml.tui.app  # noqa: F401
    except ImportError as missing:
        print(f"bench_tui: {missing.name} is not importable from {sys.executable}: run it with the project's venv "
              "(.venv/bin/python benchmarks/bench_tui.py)", file=sys.stderr)
        return 2

    tmp_parent = Path(args.tmp or tempfile.gettempdir())
    if args.db is None:
        points = args.runs * args.steps * len(bench_registry.METRICS)
        need = points * bench_registry.DB_BYTES_PER_POINT + (args.runs * args.steps * bench_registry.SPOOL_BYTES_PER_STEP
                                                             if args.build == "ingest" else 0)
        free = shutil.disk_usage(tmp_parent).free
        if free < 1.3 * need:
            print(f"bench_tui: {tmp_parent} has {free / 1e9:.1f} GB free; this run needs about {need / 1e9:.1f} GB "
                  "(use --tmp, or fewer --runs/--steps)", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="slurmml-bench-tui-", dir=tmp_parent))
    os.environ["SLURMML_HOME"] = str(tmp / "home")  # nothing of this reaches ~/.slurmml
    build = dressed = None
    results: dict[str, list[dict[str, Any]]] = {"slurmml": [], "peer": []}
    try:
        if args.db is None:
            db = tmp / "big" / "registry.db"
            db.parent.mkdir()
            note(f"building a registry of {args.runs:,} runs x {args.steps:,} steps x 4 metrics ({args.build})")
            if args.build == "ingest":
                build = bench_registry.build_by_ingest(tmp / "big", db, args.runs, args.steps, args.workers)
            else:
                build = bench_registry.build_by_bulk_insert(tmp / "big", db, args.runs, args.steps)
            note(f"built in {build.seconds:.0f} s; adding states, overrides, job ids, hosts, params")
            dressed = dress_registry(db)
            note("flushing it to disk (os.sync), so that writeback does not run during the measurements")
            os.sync()
        else:
            db = args.db.resolve()
        args.db_path = db
        facts = registry_facts(db)
        note(f"registry: {facts['runs']:,} runs, {facts['points']:,} points, {facts['bytes'] / 1e9:.2f} GB")
        args.load_before = os.getloadavg()
        for rep in range(args.reps):
            for kind in ("slurmml", "peer"):
                note(f"{kind}: process {rep + 1} of {args.reps}")
                results[kind].append(run_child(kind, db, tmp / "home", args.timeout, args.refresh_s))
        args.load_after = os.getloadavg()
        mine, peer = summarize(results["slurmml"]), summarize(results["peer"])
    except bench_registry.BenchError as error:
        print(f"bench_tui: {error}", file=sys.stderr)
        return 1
    except BenchError as error:
        print(f"bench_tui: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_tui: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept: {tmp}" + (f" (rerun with --db {tmp / 'big' / 'registry.db'})" if args.db is None else ""),
                  file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(args, facts, build, dressed, mine, peer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
