"""Cost of in-job logging, spool ingest rate, and registry queries on a 10,000-run registry.

One run on this machine, no cluster needed. Three measurements:

  (a) one `slurmml.log(step=i, loss=.., acc=.., lr=.., grad_norm=..)` call inside a run (4 metrics):
      the median of individually timed calls, and the total wall time of N calls plus the final
      flush divided by N (this includes the flush thread's JSON encoding and the file writes);
      against `mlflow.log_metrics({4 metrics}, step=i)` in a run on MLflow's SQLite backend;
  (b) `Registry.ingest()` on a fresh registry of R runs whose spools (S steps x 4 metrics each)
      were written by the real SpoolWriter: points per second;
  (c) a registry of --runs x --steps x 4 metrics (default 10,000 x 1,000 = 40M points), built
      through the real spool + ingest path (or, with --build bulk, by inserting rows straight into
      the same tables): the top-20 leaderboard (`Registry.best`, `Registry.runs(sort='-acc')`) and
      the curves of 20 runs downsampled to 500 points (`Registry.curves`), median of --reps.

Everything lives in one temporary directory, deleted at the end (unless --keep).
Usage: `.venv/bin/python benchmarks/bench_registry.py [--runs 1000 --steps 200]`. mlflow comes with
`pip install -e '.[bench]'`; without it, --no-mlflow skips the comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing
import os
import random
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

try:
    from rich.console import Console
    from rich.table import Table

    import slurmml
    from slurmml.registry.registry import Registry
    from slurmml.tracking import client
    from slurmml.tracking.writer import SpoolWriter
except ImportError as missing:
    sys.exit(f"bench_registry: {missing.name} is not importable from {sys.executable}: "
             "run it with the project's venv (.venv/bin/python benchmarks/bench_registry.py)")

METRICS = ("loss", "acc", "lr", "grad_norm")
RUNS_PER_SWEEP = 1000
SPOOL_BYTES_PER_STEP = 125  # one metric record of 4 metrics, as the writer encodes it
DB_BYTES_PER_POINT = 60  # a metrics row and its index entry
TOP = 20
CURVE_POINTS = 500
GOALS = {"log_ratio": 100.0, "ingest": 500_000.0, "leaderboard_ms": 100.0, "curves_ms": 200.0}

err = Console(stderr=True, soft_wrap=True)


class BenchError(Exception):
    """A measurement went wrong: reported as one line, exit status 1."""


def note(text: str) -> None:
    err.print(f"[dim]{dt.datetime.now():%H:%M:%S}[/dim] {text}", highlight=False)


# ------------------------------------------------------------------------- synthetic runs


def run_curve(seed: int, steps: int) -> tuple[dict[str, Any], list[tuple[float, float, float, float]]]:
    """A run's config and its (loss, acc, lr, grad_norm) per step: noisy exponential learning curves."""
    rng = random.Random(seed)
    lr0 = 10 ** rng.uniform(-4, -2)
    final_acc = rng.uniform(0.55, 0.98)
    final_loss = rng.uniform(0.02, 0.6)
    tau = max(1.0, rng.uniform(0.05, 0.4) * steps)
    noise = [rng.gauss(0.0, 1.0) for _ in range(97)]
    values = []
    exp, cos, pi = math.exp, math.cos, math.pi
    for i in range(steps):
        decay = exp(-i / tau)
        wobble = noise[i % 97]
        values.append((
            final_loss + (2.3 - final_loss) * decay + 0.02 * wobble,
            min(1.0, max(0.0, final_acc * (1 - decay) + 0.1 * decay + 0.005 * wobble)),
            lr0 * 0.5 * (1 + cos(pi * i / steps)),
            1.0 + 4.0 * decay + 0.1 * abs(wobble),
        ))
    config = {"model": {"name": rng.choice(["mlp", "cnn", "vit"]), "layers": rng.randint(2, 12)},
              "optim": {"lr": lr0, "weight_decay": rng.choice([0.0, 1e-4, 1e-2])}, "seed": seed}
    return config, values


_ENVIRONMENT: dict[str, Any] = {}


def start_record(run_id: str, run_dir: str, config: dict[str, Any], when: float) -> dict[str, Any]:
    """What client.start_run writes first (the environment is looked up once, not per run)."""
    if not _ENVIRONMENT:
        _ENVIRONMENT.update(client.environment())
    return {"k": "start", "t": when, "run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
            "run_dir": run_dir, "config": config, "overrides": [f"optim.lr={config['optim']['lr']:.3g}"],
            "argv": ["train.py"], "cwd": run_dir, "environment": _ENVIRONMENT}


def write_spool(job: tuple[str, str, int, int]) -> int:
    """Write one run's spool with the real SpoolWriter: start, one metric record per step, end."""
    path, run_id, seed, steps = job
    config, values = run_curve(seed, steps)
    when = 1.8e9 + seed
    writer = SpoolWriter(path, handle_sigterm=False)
    write = writer.write
    write(start_record(run_id, os.path.dirname(path), config, when))
    for step, (loss, acc, lr, grad_norm) in enumerate(values):
        write({"k": "m", "t": when + 0.05 * step, "s": step,
               "v": {"loss": loss, "acc": acc, "lr": lr, "grad_norm": grad_norm}})
    write({"k": "end", "t": when + 0.05 * steps, "state": "COMPLETED", "exit_code": 0, "error": None})
    writer.close()
    return os.path.getsize(path)


def sweep_plan(root: Path, runs: int, steps: int, first_seed: int) -> tuple[list[tuple[dict, list[dict]]], list[tuple]]:
    """Sweeps of up to RUNS_PER_SWEEP runs (as add_sweep wants them) and the spool jobs that go with them."""
    sweeps, jobs = [], []
    for start in range(0, runs, RUNS_PER_SWEEP):
        sweep_id = f"bench{first_seed + start:07d}"
        batch_dir = root / sweep_id / ".slurmml" / "batch-0"
        sweep = {"id": sweep_id, "name": "bench", "created": time.time(), "argv": ["train.py", "-m"],
                 "sweep_dir": str(root / sweep_id), "backend": "local", "launcher": {"name": "bench"}}
        members = []
        for index in range(min(RUNS_PER_SWEEP, runs - start)):
            run_id = f"{sweep_id}-{index}"
            spool = batch_dir / "spool" / f"{index}.jsonl"
            members.append({"id": run_id, "job_num": index, "overrides": [f"seed={first_seed + start + index}"],
                            "spool_path": str(spool)})
            jobs.append((str(spool), run_id, first_seed + start + index, steps))
        sweeps.append((sweep, members))
    return sweeps, jobs


def write_spools(jobs: list[tuple], workers: int) -> int:
    """All spools, in `workers` processes (the writing is not what is timed). Total bytes."""
    if workers <= 1 or len(jobs) < 8:
        return sum(write_spool(job) for job in jobs)
    context = multiprocessing.get_context("fork")
    with context.Pool(workers) as pool:
        return sum(pool.imap_unordered(write_spool, jobs, chunksize=max(1, len(jobs) // (workers * 16))))


def new_registry(path: Path, sweeps: list[tuple[dict, list[dict]]]) -> Registry:
    registry = Registry(path)
    for sweep, members in sweeps:
        registry.add_sweep(sweep, members)
    return registry


# ------------------------------------------------------------------------- (a) the log call


@dataclass
class LogFigures:
    calls: int
    median_s: float  # individually timed calls
    amortized_s: float  # (N calls + final flush) / N
    extra: dict[str, float] = field(default_factory=dict)


def timer_overhead_s(samples: int = 100_000) -> float:
    clock = time.perf_counter_ns
    times = []
    for _ in range(samples):
        start = clock()
        times.append(clock() - start)
    return statistics.median(times) / 1e9


def call_values(count: int = 1000) -> list[tuple[float, float, float, float]]:
    return run_curve(12345, count)[1]


def bench_log_slurmml(tmp: Path, calls: int) -> LogFigures:
    """slurmml.log as a training loop writes it, in a run started like the job wrapper starts one."""
    values = call_values()
    cycle = len(values)
    clock = time.perf_counter_ns

    def start(name: str) -> Path:
        client._reset()
        spool = tmp / "log" / f"{name}.jsonl"
        client.start_run(spool, f"bench-{name}", tmp / "log", {"optim": {"lr": 1e-3}}, ["optim.lr=0.001"])
        return spool

    # 1. each call timed on its own, written as users write it: slurmml.log(...)
    spool_timed = start("timed")
    times = []
    append = times.append
    for i in range(calls):
        loss, acc, lr, grad_norm = values[i % cycle]
        begin = clock()
        slurmml.log(step=i, loss=loss, acc=acc, lr=lr, grad_norm=grad_norm)
        append(clock() - begin)
    client.end_run()
    median_attr = statistics.median(times) / 1e9

    # 2. the same with the function looked up once (log = slurmml.log)
    log = slurmml.log
    start("bound")
    times.clear()
    for i in range(calls):
        loss, acc, lr, grad_norm = values[i % cycle]
        begin = clock()
        log(step=i, loss=loss, acc=acc, lr=lr, grad_norm=grad_norm)
        append(clock() - begin)
    client.end_run()
    median_bound = statistics.median(times) / 1e9

    # 3. N calls back to back, then the flush that writes what is left: everything the run pays for
    spool_total = start("total")
    gc.collect()
    begin = time.perf_counter()
    for i in range(calls):
        loss, acc, lr, grad_norm = values[i % cycle]
        slurmml.log(step=i, loss=loss, acc=acc, lr=lr, grad_norm=grad_norm)
    client.current_writer().flush()
    total = time.perf_counter() - begin
    client.end_run()
    client._reset()

    for spool in (spool_timed, spool_total):
        with open(spool, "rb") as handle:
            logged = sum(1 for line in handle if line.startswith(b'{"k":"m"'))
        if logged != calls:
            raise BenchError(f"{spool} has {logged} metric records, expected {calls}")
    return LogFigures(calls, median_attr, total / calls,
                      {"median_bound_s": median_bound, "spool_bytes": os.path.getsize(spool_total)})


def bench_log_mlflow(tmp: Path, calls: int) -> LogFigures:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    db = tmp / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    experiment = mlflow.create_experiment("bench", artifact_location=(tmp / "mlflow" / "artifacts").as_uri())
    values = call_values()
    cycle = len(values)
    clock = time.perf_counter_ns
    times = []
    with mlflow.start_run(experiment_id=experiment) as active:
        for i in range(20):  # first writes: caches, prepared statements
            loss, acc, lr, grad_norm = values[i % cycle]
            mlflow.log_metrics({"loss": loss, "acc": acc, "lr": lr, "grad_norm": grad_norm}, step=-20 + i)
        begin = time.perf_counter()
        for i in range(calls):
            loss, acc, lr, grad_norm = values[i % cycle]
            start = clock()
            mlflow.log_metrics({"loss": loss, "acc": acc, "lr": lr, "grad_norm": grad_norm}, step=i)
            times.append(clock() - start)
        total = time.perf_counter() - begin
        run_id = active.info.run_id
    stored = len(mlflow.tracking.MlflowClient().get_metric_history(run_id, "loss"))
    if stored != calls + 20:
        raise BenchError(f"MLflow stored {stored} loss points, expected {calls + 20}")
    return LogFigures(calls, statistics.median(times) / 1e9, total / calls)


# ------------------------------------------------------------------------- (b) ingest


@dataclass
class IngestFigures:
    runs: int
    points: int
    spool_bytes: int
    seconds: float
    again_s: float  # a second ingest with nothing new

    @property
    def rate(self) -> float:
        return self.points / self.seconds


def bench_ingest(tmp: Path, runs: int, steps: int, workers: int) -> IngestFigures:
    root = tmp / "ingest"
    sweeps, jobs = sweep_plan(root / "sweeps", runs, steps, first_seed=0)
    spool_bytes = write_spools(jobs, workers)
    registry = new_registry(root / "registry.db", sweeps)
    try:
        gc.collect()
        begin = time.perf_counter()
        report = registry.ingest()
        seconds = time.perf_counter() - begin
        begin = time.perf_counter()
        again = registry.ingest()
        again_s = time.perf_counter() - begin
        expected = runs * steps * len(METRICS)
        stored = registry.conn.execute("SELECT count(*) FROM metrics").fetchone()[0]
        if report.points != expected or stored != expected or report.problems or again.points:
            raise BenchError(f"ingest: {report.points} points reported, {stored} stored, expected {expected}; "
                             f"problems: {report.problems[:3]}; second pass: {again.points} points")
    finally:
        registry.close()
    shutil.rmtree(root, ignore_errors=True)
    return IngestFigures(runs, expected, spool_bytes, seconds, again_s)


# ------------------------------------------------------------------------- (c) a big registry


@dataclass
class BuildFigures:
    how: str
    runs: int
    points: int
    seconds: float  # everything: spools + ingest, or the bulk insert
    detail: dict[str, float]
    db_bytes: int


def build_by_ingest(tmp: Path, db: Path, runs: int, steps: int, workers: int) -> BuildFigures:
    sweeps, jobs = sweep_plan(tmp / "sweeps", runs, steps, first_seed=1_000_000)
    begin = time.perf_counter()
    note(f"(c) writing {runs:,} spools of {steps:,} steps with SpoolWriter ({workers} processes)")
    spool_bytes = write_spools(jobs, workers)
    written = time.perf_counter()
    registry = new_registry(db, sweeps)
    note(f"(c) ingesting {spool_bytes / 1e9:.2f} GB of spools: {runs * steps * len(METRICS):,} points")
    ingest_begin = time.perf_counter()
    report = registry.ingest()
    done = time.perf_counter()
    registry.close()
    expected = runs * steps * len(METRICS)
    if report.points != expected or report.problems:
        raise BenchError(f"ingest of the big registry: {report.points} points, expected {expected}; "
                         f"problems: {report.problems[:3]}")
    shutil.rmtree(tmp / "sweeps", ignore_errors=True)
    return BuildFigures("spools written by SpoolWriter + Registry.ingest()", runs, expected, done - begin,
                        {"spools_s": written - begin, "ingest_s": done - ingest_begin,
                         "ingest_rate": expected / (done - ingest_begin), "spool_bytes": spool_bytes},
                        db_size(db))


def build_by_bulk_insert(tmp: Path, db: Path, runs: int, steps: int) -> BuildFigures:
    """The rows ingest would have made, inserted with executemany; metric_summary from the same values."""
    sweeps, _ = sweep_plan(tmp / "sweeps", runs, steps, first_seed=1_000_000)
    begin = time.perf_counter()
    registry = new_registry(db, sweeps)
    conn = registry.conn
    conn.executemany("INSERT OR IGNORE INTO metric_keys(name) VALUES (?)", [(name,) for name in METRICS])
    keys = [dict(conn.execute("SELECT name, key FROM metric_keys").fetchall())[name] for name in METRICS]
    runs_by_id = dict(conn.execute("SELECT id, run FROM runs").fetchall())
    note(f"(c) bulk-inserting {runs * steps * len(METRICS):,} points for {runs:,} runs")
    conn.execute("BEGIN IMMEDIATE")
    for _, members in sweeps:
        for member in members:
            run = runs_by_id[member["id"]]
            seed = int(member["overrides"][0].split("=")[1])
            config, values = run_curve(seed, steps)
            when = 1.8e9 + seed
            conn.executemany("INSERT INTO metrics(run, key, step, value, time) VALUES (?, ?, ?, ?, ?)",
                             [(run, keys[m], step, row[m], when + 0.05 * step)
                              for step, row in enumerate(values) for m in range(len(METRICS))])
            conn.executemany("INSERT INTO metric_summary(run, key, last, last_step, min, max, count) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(run, keys[m], values[-1][m], steps - 1, min(r[m] for r in values),
                               max(r[m] for r in values), steps) for m in range(len(METRICS))])
            conn.execute("UPDATE runs SET state = 'COMPLETED', config = ?, started = ?, ended = ?, exit_code = 0 "
                         "WHERE run = ?", (json.dumps(config), when, when + 0.05 * steps, run))
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
    conn.execute("COMMIT")
    registry.close()
    points = runs * steps * len(METRICS)
    return BuildFigures("bulk insert (executemany) into the registry's own tables, metric_summary from the same values",
                        runs, points, time.perf_counter() - begin, {}, db_size(db))


def db_size(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


@dataclass
class Timing:
    first_s: float
    median_s: float
    runs: list[float]


def timed(function: Callable[[], Any], reps: int) -> tuple[Timing, Any]:
    results = []
    value = None
    for _ in range(reps):
        begin = time.perf_counter()
        value = function()
        results.append(time.perf_counter() - begin)
    return Timing(results[0], statistics.median(results[1:] if reps > 2 else results), results), value


def bench_queries(db: Path, steps: int, reps: int) -> dict[str, Timing]:
    registry = Registry(db, create=False)  # a new connection: nothing cached in it yet
    try:
        out: dict[str, Timing] = {}
        out["best"], board = timed(lambda: registry.best("acc", mode="max", limit=TOP), reps)
        out["runs_sorted"], rows = timed(lambda: registry.runs(sort="-acc", limit=TOP), reps)
        first_sweep = registry.conn.execute("SELECT id FROM sweeps ORDER BY id LIMIT 1").fetchone()[0]
        out["best_sweep"], in_sweep = timed(lambda: registry.best("acc", sweep=first_sweep, limit=TOP), reps)
        ids = [row["id"] for row in board]
        out["curves"], curves = timed(lambda: registry.curves(ids, "loss", max_points=CURVE_POINTS), reps)
    finally:
        registry.close()
    # the answers must be right, or the times mean nothing
    values = [row["value"] for row in board]
    if len(board) != TOP or values != sorted(values, reverse=True):
        raise BenchError(f"Registry.best returned {len(board)} rows, not {TOP} in descending order")
    if [row["id"] for row in rows] != ids or [row["acc"] for row in rows] != values:
        raise BenchError("Registry.runs(sort='-acc') does not agree with Registry.best('acc')")
    if len(in_sweep) != min(TOP, RUNS_PER_SWEEP) or any(row["sweep_id"] != first_sweep for row in in_sweep):
        raise BenchError("Registry.best(sweep=...) returned rows of other sweeps")
    want = min(steps, CURVE_POINTS)
    if set(curves) != set(ids) or any(len(points) != want for points in curves.values()):
        raise BenchError(f"Registry.curves did not return {want} points for each of the {TOP} runs")
    if any(points[-1][0] != steps - 1 for points in curves.values()):
        raise BenchError("Registry.curves lost the last step of a curve")
    return out


# ------------------------------------------------------------------------- report


def us(seconds: Optional[float]) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:.2f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds:.1f} s ({int(seconds // 60)} min {seconds % 60:.0f} s)"


def goal(ok: bool) -> str:
    return "met" if ok else "[bold red]MISSED[/bold red]"


def slurmml_source() -> str:
    import subprocess

    where = Path(slurmml.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no", "slurmml"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return f"slurmml from {where}"
    if head.returncode:
        return f"slurmml from {where}"
    changes = " + uncommitted changes in slurmml/" if dirty.stdout.strip() else ""
    return f"slurmml from {where} (git {head.stdout.strip()}{changes})"


def report(args: argparse.Namespace, timer_s: float, log: LogFigures, peer: Optional[LogFigures],
           ingest: IngestFigures, build: BuildFigures, queries: dict[str, Timing]) -> None:
    out = Console()
    if not out.is_terminal:
        out = Console(width=140)
    mlflow_version = importlib.metadata.version("mlflow") if peer else "not run"
    print(f"slurmml {slurmml.__version__} registry benchmark; mlflow {mlflow_version}; Python {sys.version.split()[0]}, "
          f"SQLite {sqlite3.sqlite_version}")
    print(slurmml_source())
    print(f"{dt.datetime.now():%Y-%m-%d %H:%M}, {socket.gethostname()}, {os.cpu_count()} cores; temporary files in "
          f"{args.tmp_root}")

    table = Table(show_lines=False)
    table.add_column("measure")
    table.add_column("slurmml", justify="right")
    table.add_column("mlflow (SQLite)", justify="right")
    table.add_column("goal", justify="right")
    ratio_median = peer.median_s / log.median_s if peer else None
    ratio_total = peer.amortized_s / log.amortized_s if peer else None
    table.add_row(f"(a) one log call (4 metrics): median of {log.calls:,} | {peer.calls if peer else 0:,} calls",
                  us(log.median_s), us(peer.median_s if peer else None), "")
    table.add_row("(a)   the same with `log = slurmml.log` looked up once", us(log.extra["median_bound_s"]), "", "")
    table.add_row("(a) (N calls + final flush) / N", us(log.amortized_s), us(peer.amortized_s if peer else None), "")
    table.add_row("(a) mlflow/slurmml: median call | (N calls + flush) / N",
                  f"{ratio_median:,.0f}x | {ratio_total:,.0f}x" if peer else "n/a", "",
                  f">= {GOALS['log_ratio']:.0f}x: {goal(ratio_total >= GOALS['log_ratio'])}" if peer else "")
    table.add_row("(a) spool bytes per call", f"{log.extra['spool_bytes'] / log.calls:.0f} B", "", "")
    table.add_section()
    table.add_row(f"(b) Registry.ingest(), {ingest.runs} runs x {ingest.points // ingest.runs // len(METRICS):,} steps x 4 "
                  f"= {ingest.points / 1e6:.2f}M points", secs(ingest.seconds), "", "")
    table.add_row("(b)   spools read", f"{ingest.spool_bytes / 1e6:.0f} MB", "", "")
    table.add_row("(b) ingest rate", f"{ingest.rate:,.0f} points/s", "",
                  f">= {GOALS['ingest']:,.0f}: {goal(ingest.rate >= GOALS['ingest'])}")
    table.add_row("(b) ingest again, nothing new", ms(ingest.again_s), "", "")
    table.add_section()
    table.add_row(f"(c) build: {build.runs:,} runs x {build.points // build.runs // len(METRICS):,} steps x 4 "
                  f"= {build.points / 1e6:.2f}M points", secs(build.seconds), "", "")
    if "ingest_s" in build.detail:
        table.add_row("(c)   writing the spools | Registry.ingest()",
                      f"{secs(build.detail['spools_s'])} | {secs(build.detail['ingest_s'])}", "", "")
        table.add_row("(c)   ingest rate into the growing registry", f"{build.detail['ingest_rate']:,.0f} points/s", "", "")
    table.add_row("(c) registry size on disk", f"{build.db_bytes / 1e9:.2f} GB", "", "")
    median_of = f"median of {args.reps - 1 if args.reps > 2 else args.reps}"  # the first call is shown apart
    rows = [("best", f"(c) Registry.best('acc', limit={TOP})", GOALS["leaderboard_ms"]),
            ("runs_sorted", f"(c) Registry.runs(sort='-acc', limit={TOP})", GOALS["leaderboard_ms"]),
            ("best_sweep", f"(c) Registry.best('acc', sweep=<{RUNS_PER_SWEEP:,} runs>, limit={TOP})", GOALS["leaderboard_ms"]),
            ("curves", f"(c) Registry.curves({TOP} runs, 'loss', max_points={CURVE_POINTS})", GOALS["curves_ms"])]
    for key, label, limit_ms in rows:
        timing = queries[key]
        table.add_row(label, f"{ms(timing.median_s)} ({ms(timing.first_s)})", "",
                      f"< {limit_ms:.0f} ms: {goal(timing.median_s * 1e3 < limit_ms)}")
    out.print(table)
    print(f"(c) registry built by: {build.how}.")
    print(f"Timer overhead (perf_counter_ns pair), included in the median call times: {us(timer_s)}.")
    print(f"(c) query times: {median_of} calls after the first (in brackets: the first, on a new connection); "
          "the registry file is in the OS page cache.")
    leaderboard = max(queries["best"].median_s, queries["runs_sorted"].median_s)
    ratio = f"{ratio_total:,.0f}x" if peer else "n/a"
    print(f"ratios: log_call mlflow/slurmml={ratio}  ingest={ingest.rate:,.0f} points/s  "
          f"leaderboard={leaderboard * 1e3:.1f} ms  curves={queries['curves'].median_s * 1e3:.1f} ms", flush=True)


# ------------------------------------------------------------------------- main


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="(c) runs in the big registry (default 10000)")
    parser.add_argument("--steps", type=int, default=1_000, help="(c) steps per run, 4 metrics each (default 1000)")
    parser.add_argument("--build", choices=("ingest", "bulk"), default="ingest",
                        help="(c) how to build the big registry: real spools + ingest (default), or bulk insert")
    parser.add_argument("--ingest-runs", type=int, default=64, help="(b) runs (default 64)")
    parser.add_argument("--ingest-steps", type=int, default=5_000, help="(b) steps per run (default 5000)")
    parser.add_argument("--log-calls", type=int, default=200_000, help="(a) slurmml.log calls (default 200000)")
    parser.add_argument("--mlflow-calls", type=int, default=2_000, help="(a) mlflow.log_metrics calls (default 2000)")
    parser.add_argument("--no-mlflow", action="store_true", help="(a) skip the MLflow comparison")
    parser.add_argument("--reps", type=int, default=7, help="(c) repetitions of each query (default 7)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing spools")
    parser.add_argument("--tmp", type=Path, default=None, help="where to make the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if min(args.runs, args.steps, args.ingest_runs, args.ingest_steps, args.log_calls, args.mlflow_calls, args.reps) < 1:
        parser.error("counts must be at least 1")
    if args.runs < TOP:
        parser.error(f"--runs must be at least {TOP} (the leaderboard size)")
    if not args.no_mlflow and importlib.util.find_spec("mlflow") is None:
        print(f"bench_registry: mlflow is not installed in this Python ({sys.executable}): "
              "pip install -e '.[bench]', or run with --no-mlflow", file=sys.stderr)
        return 2

    tmp_parent = Path(args.tmp or tempfile.gettempdir())
    points = args.runs * args.steps * len(METRICS)
    need = args.runs * args.steps * SPOOL_BYTES_PER_STEP * (args.build == "ingest") + points * DB_BYTES_PER_POINT
    free = shutil.disk_usage(tmp_parent).free
    if free < 1.3 * need:
        print(f"bench_registry: {tmp_parent} has {free / 1e9:.1f} GB free; this run needs about {need / 1e9:.1f} GB "
              "(use --tmp, or fewer --runs/--steps)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="slurmml-bench-registry-", dir=tmp_parent))
    args.tmp_root = tmp
    os.environ["SLURMML_HOME"] = str(tmp / "home")  # nothing of this reaches ~/.slurmml
    try:
        note(f"(a) {args.log_calls:,} slurmml.log calls, three ways")
        timer_s = timer_overhead_s()
        log = bench_log_slurmml(tmp, args.log_calls)
        peer = None
        if not args.no_mlflow:
            note(f"(a) {args.mlflow_calls:,} mlflow.log_metrics calls")
            peer = bench_log_mlflow(tmp, args.mlflow_calls)
        note(f"(b) {args.ingest_runs} spools of {args.ingest_steps:,} steps, then Registry.ingest()")
        ingest = bench_ingest(tmp, args.ingest_runs, args.ingest_steps, args.workers)
        db = tmp / "big" / "registry.db"
        db.parent.mkdir()
        if args.build == "ingest":
            build = build_by_ingest(tmp / "big", db, args.runs, args.steps, args.workers)
        else:
            build = build_by_bulk_insert(tmp / "big", db, args.runs, args.steps)
        note(f"(c) registry built in {secs(build.seconds)} ({build.db_bytes / 1e9:.2f} GB); timing queries")
        queries = bench_queries(db, args.steps, args.reps)
    except BenchError as error:
        print(f"bench_registry: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_registry: interrupted", file=sys.stderr)
        return 130
    finally:
        client._reset()
        if args.keep:
            err.print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(args, timer_s, log, peer, ingest, build, queries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
