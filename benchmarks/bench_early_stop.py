"""Early stopping against no early stopping: one 27-configuration sweep of examples/train.py on the dev cluster,
run twice, and the latency of live controls.

  1. without a rule (wait=false, followed through the shared poller); while it trains, `slurmml set` sends each of
     --controls runs its own learning rate back (same value: the curves do not change), and the time from the
     request to the job's answer is measured from the registry (asked -> answered);
  2. with the hyperband rule (wait=true: the launcher's own wait is the watcher that prunes).

For each: CPU-hours used (each run's elapsed time times its one CPU, from the registry: the dev cluster has no
GPUs, GPU-hours are the same sum with GPUs), wall time from launch to the last run's end, and the best run's final
val_loss and configuration. Needs the dev cluster (`slurmml cluster up`). Usage:
`.venv/bin/python benchmarks/bench_early_stop.py [--epochs 27] [--epoch-s 2]`. The last line prints the ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "examples" / "train.py"
GRID = ["optimizer.lr=0.1,0.01,0.0003", "model.hidden=4,16,64", "model.dropout=0.0,0.2,0.5"]
RULE = "hydra.launcher.early_stop={metric:val_loss,rule:hyperband,min_steps:2,eta:3,grace_s:30}"
KEYS = ("optimizer.lr", "model.hidden", "model.dropout")


def launch(folder: Path, args: argparse.Namespace, *extra: str) -> tuple[str, float]:
    folder.mkdir(parents=True)
    started = time.time()
    result = subprocess.run(
        [sys.executable, str(TRAIN), "-m", "hydra/launcher=slurmml", "hydra.launcher.poll_interval_s=5",
         f"hydra.sweep.dir={folder}/sweep", "hydra.launcher.timeout_min=20", "n_samples=600", "save_model=false",
         f"epochs={args.epochs}", f"epoch_s={args.epoch_s}", *GRID, *extra],
        cwd=folder, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        sys.exit(f"bench_early_stop: the sweep failed:\n{result.stderr[-3000:]}")
    return re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4})", result.stderr).group(1), started


def follow(registry: Any, sweep: str, on_round: Any = None) -> None:
    """Watch the sweep through the shared poller until every run has ended."""
    from slurmml.core.states import ACTIVE_STATES
    from slurmml.poller.loop import Poller

    poller = Poller(registry, squeue_interval_s=5)
    while True:
        registry.ingest(sweep)
        poller.poll()
        if on_round:
            on_round()
        if all(r["state"] not in ACTIVE_STATES for r in registry.runs(sweep=sweep)):
            return
        time.sleep(1)


def figures(registry: Any, sweep: str, started: float) -> dict[str, Any]:
    rows = registry.conn.execute(
        "SELECT r.id, r.state, r.started, r.ended, r.config FROM runs r WHERE r.sweep_id = ?", (sweep,)).fetchall()
    cpu_s = sum((ended or time.time()) - (begun or ended or time.time()) for _, _, begun, ended, _ in rows)
    finals = {run["id"]: run for run in registry.runs(sweep=sweep)}
    completed = {run_id: run["val_loss"] for run_id, run in finals.items()
                 if run["state"] == "COMPLETED" and run.get("val_loss") is not None}
    best = min(completed, key=completed.get)
    import json

    config = json.loads(next(c for i, _, _, _, c in rows if i == best))
    return {"cpu_hours": cpu_s / 3600, "wall_s": max(e or 0 for _, _, _, e, _ in rows) - started,
            "best": best, "best_val_loss": completed[best],
            "best_config": (config["optimizer"]["lr"], config["model"]["hidden"], config["model"]["dropout"]),
            "states": {state: sum(1 for r in rows if r[1] == state) for state in {r[1] for r in rows}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--epoch-s", type=float, default=2.0)
    parser.add_argument("--controls", type=int, default=10, help="live controls sent during the first sweep")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench_early_stop_"))
    os.environ["SLURMML_HOME"] = str(home / "home")
    os.environ["SLURMML_CONTROL_INTERVAL_S"] = "1"
    from slurmml.control.live import send, wait
    from slurmml.registry.registry import Registry

    sweep, started = launch(home / "plain", args)
    registry = Registry(home / "home" / "registry.db", create=False)
    sent: list[Any] = []

    def control_once() -> None:  # one `set` per round to a running run that has not had one
        if len(sent) >= args.controls:
            return
        for run in registry.runs(sweep=sweep):
            if run["state"] == "RUNNING" and run.get("val_loss") is not None and run["id"] not in {s.run_id for s in sent}:
                lr = json_config(registry, run["id"])["optimizer"]["lr"]
                item = send(registry, run["id"], "set", {"values": {"optimizer.lr": lr}}, timeout_s=60)
                sent.append(item)
                wait(registry, [item], 60)
                return

    follow(registry, sweep, control_once)
    plain = figures(registry, sweep, started)
    latencies = [row["answered"] - row["asked"] for row in registry.controls(s.control_id for s in sent)
                 if row["shown"] == "applied"]

    sweep, started = launch(home / "pruned", args, RULE, "hydra.launcher.wait=true")
    follow(registry, sweep)
    pruned = figures(registry, sweep, started)

    print(f"{'':24}{'no early stop':>16}{'hyperband':>16}")
    for name, key in (("CPU-hours", "cpu_hours"), ("wall time (s)", "wall_s"), ("best val_loss", "best_val_loss")):
        print(f"{name:24}{plain[key]:>16.4f}{pruned[key]:>16.4f}")
    print(f"{'best (lr, hidden, drop)':24}{str(plain['best_config']):>16}{str(pruned['best_config']):>16}")
    print(f"states: {plain['states']} | {pruned['states']}")
    print(f"control latency over {len(latencies)} of {len(sent)} sets: "
          + (f"median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s" if latencies else "none"))
    same = plain["best_config"] == pruned["best_config"]
    median_latency = statistics.median(latencies) if latencies else float("nan")
    print(f"ratios: cpu_hours none/hyperband={plain['cpu_hours'] / pruned['cpu_hours']:.2f}x  "
          f"wall none/hyperband={plain['wall_s'] / pruned['wall_s']:.2f}x  same_best_config={'yes' if same else 'no'}  "
          f"control_latency median={median_latency:.2f}s max={max(latencies or [float('nan')]):.2f}s")


def json_config(registry: Any, run_id: str) -> dict[str, Any]:
    import json

    return json.loads(registry.conn.execute("SELECT config FROM runs WHERE id = ?", (run_id,)).fetchone()[0])


if __name__ == "__main__":
    main()
