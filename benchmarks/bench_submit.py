"""Submit an N-point sweep of a trivial Hydra task with slurmml and with hydra-submitit-launcher; compare.

Needs the dev cluster (`slurmml cluster up`) and the peer launcher (`pip install -e '.[bench]'`).
Three runs, one after the other, each in a fresh temporary directory with its own Slurm call counter:

  1. slurmml, wait=false (the default): time until the sweep is queued and the command returns;
  2. slurmml, wait=true: time until the command returns with all N results;
  3. hydra-submitit-launcher: its normal run, which blocks until all N results are back. It has no
     queue-and-return mode, so its queue time is taken from its sbatch call: start of the run until
     that call returned (the call counter's wrappers time every call).

Between runs the script waits for an empty queue, then checks that sacct lists all N jobs of the
run as COMPLETED. Usage: `.venv/bin/python benchmarks/bench_submit.py [--points N]` (`make bench`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

try:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from slurmml.slurm.commands import run_command
except ImportError as missing:
    sys.exit(f"bench_submit: {missing.name} is not importable from {sys.executable}: "
             "run it with the project's venv (.venv/bin/python benchmarks/bench_submit.py, or `make bench`)")

HERE = Path(__file__).resolve().parent
APP_FILES = ("trivial_app.py", "trivial_app.yaml")
COUNTED = ("sbatch", "squeue", "sacct", "scontrol", "sinfo")
WRAPPED = COUNTED + ("scancel", "srun")
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "RESIZING", "SUSPENDED"}
PEER = "hydra-submitit-launcher"

err = Console(stderr=True, soft_wrap=True)


class BenchError(Exception):
    """A run went wrong: reported as one line, exit status 1."""


@dataclass(frozen=True)
class Call:
    name: str
    who: str  # "launcher", or "job" when the command ran inside a Slurm job
    start: float
    end: Optional[float]  # None for srun, which the wrapper execs


class TimedCallCounter:
    """tests.slurm_calls.SlurmCallCounter with timestamps: each wrapper logs who called it and when.

    A line is written when the call has returned (`name who start end`), so the end of the sbatch call
    is the moment the sweep was queued. srun is exec'd (its line is written first, with no end) so that
    signals sent to the job step reach it directly.
    """

    def __init__(self, directory: Path) -> None:
        self.bin = directory / "bin"
        self.log = directory / "calls.log"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        log = shlex.quote(str(self.log))
        for name in WRAPPED:
            real = shutil.which(name)
            if real is None:
                continue
            head = '#!/bin/sh\nwho=launcher\n[ -n "$SLURM_JOB_ID" ] && who=job\n'
            if name == "srun":
                body = f'echo "{name} $who $(date +%s.%N) -" >> {log}\nexec {shlex.quote(real)} "$@"\n'
            else:
                body = (f'start=$(date +%s.%N)\n{shlex.quote(real)} "$@"\nrc=$?\n'
                        f'echo "{name} $who $start $(date +%s.%N)" >> {log}\nexit $rc\n')
            wrapper = self.bin / name
            wrapper.write_text(head + body)
            wrapper.chmod(0o755)

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    def calls(self) -> list[Call]:
        calls = []
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                calls.append(Call(parts[0], parts[1], float(parts[2]), None if parts[3] == "-" else float(parts[3])))
        return calls


@dataclass
class Run:
    label: str
    name: str  # the Slurm job name (hydra.launcher.name)
    workdir: Path
    rc: int
    started: float
    returned: float
    maxrss_kb: int
    calls: list[Call]
    stderr: str
    states: dict[str, str] = field(default_factory=dict)
    last_job_end: Optional[float] = None
    others: int = 0  # jobs of other names that ran on the cluster during this run

    @property
    def seconds(self) -> float:
        return self.returned - self.started

    def _sbatch_end(self) -> Optional[float]:
        ends = [c.end for c in self.calls if c.name == "sbatch" and c.who == "launcher" and c.end is not None]
        return max(ends) if ends else None

    @property
    def sbatch_returned_s(self) -> Optional[float]:
        end = self._sbatch_end()
        return None if end is None else end - self.started

    def counts(self, phase: str) -> Counter[str]:
        """Calls made by the launcher while submitting (`launch`, up to the end of its last sbatch call),
        by the launcher afterwards (`wait`), or from inside the jobs (`job`)."""
        sbatch_end = self._sbatch_end() or float("inf")
        if phase == "job":
            return Counter(c.name for c in self.calls if c.who == "job")
        in_launch = phase == "launch"
        return Counter(c.name for c in self.calls if c.who == "launcher" and (c.start <= sbatch_end) == in_launch)

    def launcher_counts(self) -> Counter[str]:
        return self.counts("launch") + self.counts("wait")

    @property
    def completed(self) -> int:
        return sum(state == "COMPLETED" for state in self.states.values())


def preflight() -> Optional[str]:
    """Why the benchmark cannot run here, or None."""
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        return f"{PEER} is not installed in this Python ({sys.executable}): pip install -e '.[bench]'"
    if importlib.util.find_spec("hydra_plugins.slurmml_launcher") is None:
        return f"slurmml's Hydra plugin is not importable from {sys.executable}: pip install -e ."
    missing = [name for name in ("sbatch", "squeue", "sacct", "sinfo") if shutil.which(name) is None]
    if missing:
        return f"the dev cluster is not up: {', '.join(missing)} not on PATH (run `.venv/bin/slurmml cluster up`)"
    sinfo = run_command(["sinfo", "--noheader", "--format=%T"], timeout_s=20)
    if not sinfo.ok:
        return f"the dev cluster is not up: sinfo failed ({one_line(sinfo.stderr)}); run `.venv/bin/slurmml cluster up`"
    if not any(s.strip().rstrip("*~#+") in {"idle", "mixed", "allocated", "completing"} for s in sinfo.stdout.splitlines()):
        return f"the dev cluster has no usable node (sinfo: {one_line(sinfo.stdout)}); run `.venv/bin/slurmml cluster up`"
    sacct = run_command(["sacct", "-X", "--noheader", "--starttime=now-1minutes"], timeout_s=20)
    if not sacct.ok:
        return f"Slurm accounting does not answer (sacct: {one_line(sacct.stderr)}); run `.venv/bin/slurmml cluster up`"
    return None


def one_line(text: str) -> str:
    return " ".join(text.split()) or "no output"


def spinner() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True,
                    disable=not err.is_terminal)


def wait_for_empty_queue(what: str, timeout_s: float) -> float:
    """Block until `squeue --noheader` prints nothing; returns the seconds it took."""
    start = time.monotonic()
    with spinner() as progress:
        task = progress.add_task(what)
        while True:
            queue = run_command(["squeue", "--noheader"], timeout_s=30)
            if not queue.ok:
                raise BenchError(f"squeue failed while waiting for the queue to empty: {one_line(queue.stderr)}")
            lines = [line for line in queue.stdout.splitlines() if line.strip()]
            if not lines:
                return time.monotonic() - start
            if time.monotonic() - start > timeout_s:
                raise BenchError(f"the queue did not empty within {timeout_s:g} s ({what}); squeue shows {len(lines)} line(s)")
            progress.update(task, description=f"{what}: {len(lines)} line(s) in squeue")
            time.sleep(2)


def cpu_busy(seconds: float = 1.0) -> Optional[float]:
    """Percent of CPU time not idle over the next `seconds`, from /proc/stat; None where there is none."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 100.0 * (1 - (idle1 - idle0) / max(1, total1 - total0))


def settle(below_percent: float = 20.0, max_s: float = 60.0) -> Optional[float]:
    """Wait (at most max_s) for the CPUs to go nearly idle, so one run's leftovers do not slow the next."""
    deadline = time.monotonic() + max_s
    with spinner() as progress:
        progress.add_task("waiting for the CPUs to go idle")
        while True:
            busy = cpu_busy()
            if busy is None or busy < below_percent or time.monotonic() > deadline:
                return busy


def sacct_final(name: str, points: int, timeout_s: float = 180) -> tuple[dict[str, str], Optional[float]]:
    """States of the jobs named `name` once sacct lists `points` of them, all ended; and the last End time."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = run_command(["sacct", "-X", "--noheader", "--parsable2", f"--name={name}",
                              "--format=JobID,State,End", "--starttime=now-1days"], timeout_s=60)
        if not result.ok:
            raise BenchError(f"sacct failed for jobs named {name}: {one_line(result.stderr)}")
        rows = [line.split("|") for line in result.stdout.splitlines() if line.count("|") >= 2]
        states = {row[0]: row[1].split()[0] if row[1] else "" for row in rows}
        ended = all(s not in ACTIVE_STATES for s in states.values())
        if (len(states) >= points and ended) or time.monotonic() > deadline:
            ends = [end for end in (sacct_time(row[2]) for row in rows) if end is not None]
            return states, (max(ends) if ends else None)
        time.sleep(2)


def sacct_time(text: str) -> Optional[float]:
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:  # Unknown, None
        return None


def other_jobs(run: Run) -> int:
    """How many jobs not of this run were running between its start and its return (they share the 2 cores)."""
    result = run_command(["sacct", "-X", "--noheader", "--parsable2", "--allusers", "--starttime=now-1days",
                          "--format=JobID,JobName,Start,End"], timeout_s=60)
    count = 0
    for row in (line.split("|") for line in result.stdout.splitlines() if line.count("|") >= 3):
        if row[1] == run.name:
            continue
        start, end = sacct_time(row[2]), sacct_time(row[3])
        if start is not None and start <= run.returned and (end is None or end >= run.started):
            count += 1
    return count


def run_sweep(label: str, launcher: str, extra: list[str], args: argparse.Namespace) -> Run:
    """Run the trivial app's sweep once, in a fresh directory, with a fresh call counter; time it."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    workdir = Path(tempfile.mkdtemp(prefix=f"slurmml-bench-{slug}-"))
    for name in APP_FILES:
        shutil.copy(HERE / name, workdir / name)
    counter = TimedCallCounter(workdir / "slurm_calls")
    job_name = f"bench-{slug}-{uuid.uuid4().hex[:6]}"
    argv = [sys.executable, "trivial_app.py", "-m", f"x=range({args.points})", f"hydra/launcher={launcher}",
            f"hydra.sweep.dir={workdir / 'sweep'}", f"hydra.launcher.name={job_name}",
            f"hydra.launcher.array_parallelism={args.parallelism}", f"hydra.launcher.timeout_min={args.timeout_min}",
            *extra]
    env = counter.environ()
    env["SLURMML_HOME"] = str(workdir / "slurmml_home")  # keep the benchmark's sweep records out of ~/.slurmml
    timeout_s = args.run_timeout or max(900.0, 3.0 * args.points)

    reaped: dict[str, object] = {}
    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
    with open(out_path, "w") as out, open(err_path, "w") as errf:
        started = time.time()
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=errf,
                                start_new_session=True)

        def reap() -> None:
            # wait4 gives this child's own rusage: ru_maxrss is the largest RSS in its process tree
            reaped["wait"] = os.wait4(proc.pid, 0)
            reaped["time"] = time.time()

        reaper = threading.Thread(target=reap, daemon=True)
        reaper.start()
        try:
            with spinner() as progress:
                progress.add_task(f"{label}: running the {args.points}-point sweep")
                reaper.join(timeout_s)
        except KeyboardInterrupt:
            stop(proc.pid, reaper, job_name)
            raise
        if reaper.is_alive():
            stop(proc.pid, reaper, job_name)
            raise BenchError(f"{label} did not return within {timeout_s:g} s (killed, jobs cancelled); see {workdir}")
    _, status, usage = reaped["wait"]  # type: ignore[misc]
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(label=label, name=job_name, workdir=workdir, rc=proc.returncode, started=started,
               returned=float(reaped["time"]), maxrss_kb=usage.ru_maxrss, calls=counter.calls(),  # type: ignore[arg-type]
               stderr=err_path.read_text(errors="replace"))


def stop(pid: int, reaper: threading.Thread, job_name: str) -> None:
    """End a launch that ran too long (its whole process group), and cancel its jobs."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        reaper.join(15)
        if not reaper.is_alive():
            break
    run_command(["scancel", f"--name={job_name}"])


def finish(run: Run, args: argparse.Namespace, drain_timeout_s: float) -> None:
    """After a run: check its exit status, let its jobs leave the queue, check sacct lists all N as COMPLETED."""
    if run.rc != 0:
        tail = one_line(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "")
        raise BenchError(f"{run.label} exited with status {run.rc}: {tail[:300]} (logs in {run.workdir})")
    drained = wait_for_empty_queue(f"{run.label}: waiting for its jobs to leave the queue", drain_timeout_s)
    run.states, run.last_job_end = sacct_final(run.name, args.points)
    run.others = other_jobs(run)
    if run.others:
        err.print(f"  warning: {run.others} other job(s) ran on the cluster during {run.label}: its figures are disturbed")
    err.print(f"  {run.label}: returned after {run.seconds:.1f} s; queue empty {drained:.0f} s later; "
              f"sacct: {run.completed}/{args.points} COMPLETED")
    if run.completed != args.points or len(run.states) != args.points:
        others = Counter(s for s in run.states.values() if s != "COMPLETED")
        raise BenchError(f"{run.label}: sacct lists {len(run.states)} job(s) named {run.name}, {run.completed} COMPLETED "
                         f"(others: {dict(others) or 'none'}), expected {args.points} (logs in {run.workdir})")


def secs(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    if value < 60:
        return f"{value:.1f} s"
    return f"{value:.1f} s ({int(value // 60)} min {value % 60:.0f} s)"


def calls_text(counts: Counter[str]) -> str:
    shown = [f"{name} {counts[name]}" for name in WRAPPED if counts[name]]
    return ", ".join(shown) or "none"


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.1f}x" if a is not None and b else "n/a"


def slurmml_source() -> str:
    """Where the slurmml under test comes from, with its git commit when it is a checkout."""
    import slurmml

    where = Path(slurmml.__file__).resolve().parent.parent
    head = run_command(["git", "-C", str(where), "rev-parse", "--short", "HEAD"])
    if not head.ok:
        return f"slurmml from {where}"
    changes = run_command(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"])
    dirty = " + uncommitted changes" if changes.stdout.strip() else ""
    return f"slurmml from {where} (git {head.stdout.strip()}{dirty})"


def report(args: argparse.Namespace, queued: Run, waited: Run, peer: Run) -> None:
    out = Console()
    if not out.is_terminal:
        out = Console(width=130)
    versions = {pkg: importlib.metadata.version(pkg) for pkg in ("slurmml", PEER, "submitit", "hydra-core")}
    slurm = run_command(["sinfo", "--version"]).stdout.strip() or "slurm ?"
    print(f"slurmml {versions['slurmml']} vs {PEER} {versions[PEER]} (submitit {versions['submitit']}, "
          f"hydra-core {versions['hydra-core']}): {args.points}-point sweep of benchmarks/trivial_app.py")
    print(slurmml_source())
    print(f"{dt.datetime.now():%Y-%m-%d %H:%M}, {socket.gethostname()}, {os.cpu_count()} cores, {slurm}; "
          f"array_parallelism={args.parallelism}, timeout_min={args.timeout_min}, slurmml poll_interval_s=10 (default)")

    table = Table(title=None, show_lines=False)
    table.add_column("measure")
    table.add_column("slurmml", justify="right")
    table.add_column(PEER, justify="right")
    table.add_row("(a) queued: command returned (slurmml wait=false)", secs(queued.seconds), "n/a (blocks to the end)")
    table.add_row("(a) queued: sbatch call returned, from start", secs(queued.sbatch_returned_s), secs(peer.sbatch_returned_s))
    table.add_row("(b) end to end, all results (slurmml wait=true)", secs(waited.seconds), secs(peer.seconds))
    last = [None if r.last_job_end is None else r.returned - r.last_job_end for r in (waited, peer)]
    table.add_row("(b) last job's End (sacct) to command return", secs(last[0]), secs(last[1]))
    table.add_row("(b) jobs COMPLETED in sacct", f"{waited.completed}/{args.points}", f"{peer.completed}/{args.points}")
    table.add_row("other jobs running on the cluster meanwhile (a, b)", f"{queued.others}, {waited.others}", f"-, {peer.others}")
    table.add_row("(b) peak RSS, largest process of the launch", f"{waited.maxrss_kb / 1024:.0f} MB",
                  f"{peer.maxrss_kb / 1024:.0f} MB")
    table.add_section()
    table.add_row("(c) Slurm calls, wait=false run", calls_text(queued.launcher_counts()), "n/a")
    for name in COUNTED:
        table.add_row(f"(c) {name} calls in (b): launch + wait",
                      f"{waited.counts('launch')[name]} + {waited.counts('wait')[name]}",
                      f"{peer.counts('launch')[name]} + {peer.counts('wait')[name]}")
    table.add_row("(c) calls from inside the jobs in (b)", calls_text(waited.counts("job")), calls_text(peer.counts("job")))
    out.print(table)
    print(f"{PEER} has no queue-and-return mode: its queue time is from start until its sbatch call returned.")
    print("launch = calls up to the end of the launcher's sbatch call; wait = the launcher's calls after it.")

    sw, pw = waited.launcher_counts(), peer.launcher_counts()
    print(f"ratios: queue_time peer/slurmml={ratio(peer.sbatch_returned_s, queued.seconds)}  "
          f"end_to_end peer/slurmml={ratio(peer.seconds, waited.seconds)}  "
          f"sbatch_calls slurmml={sw['sbatch']} peer={pw['sbatch']}  "
          f"squeue+sacct calls slurmml={sw['squeue'] + sw['sacct']} peer={pw['squeue'] + pw['sacct']}", flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=500, help="sweep size N (default 500)")
    parser.add_argument("--parallelism", type=int, default=256, help="array_parallelism for both launchers (default 256)")
    parser.add_argument("--timeout-min", type=int, default=10, help="timeout_min for both launchers (default 10)")
    parser.add_argument("--run-timeout", type=float, default=None, help="seconds before a run is killed (default max(900, 3 N))")
    parser.add_argument("--retries", type=int, default=1,
                        help="run a measurement again (up to this many times) when other jobs shared the cluster with it")
    parser.add_argument("--keep", action="store_true", help="keep the runs' temporary directories")
    args = parser.parse_args(argv)
    if args.points < 1:
        parser.error("--points must be at least 1")

    problem = preflight()
    if problem:
        print(f"bench_submit: {problem}", file=sys.stderr)
        return 2
    drain_timeout_s = max(900.0, 3.0 * args.points)
    runs: list[Run] = []
    try:
        wait_for_empty_queue("waiting for jobs already in the queue to end", drain_timeout_s)
        steps = [("slurmml wait=false", "slurmml", ["hydra.launcher.wait=false"]),
                 ("slurmml wait=true", "slurmml", ["hydra.launcher.wait=true"]),
                 (PEER, "submitit_slurm", [])]
        for number, (label, launcher, extra) in enumerate(steps, 1):
            for attempt in range(args.retries + 1):
                busy = settle()
                idle = "" if busy is None else f" (CPUs {busy:.0f}% busy at start)"
                err.print(f"[{number}/{len(steps)}] {label}: {args.points}-point sweep{idle}")
                run = run_sweep(label, launcher, extra, args)
                runs.append(run)
                finish(run, args, drain_timeout_s)
                if not run.others or attempt == args.retries:
                    break
                err.print(f"  running {label} again: other jobs shared the cluster with it")
        chosen = [next(r for r in reversed(runs) if r.label == label) for label, _, _ in steps]
        summary = re.search(r"(\d+) completed, (\d+) failed", chosen[1].stderr)
        if not summary or int(summary.group(1)) != args.points:
            raise BenchError(f"slurmml wait=true did not report {args.points} completed results "
                             f"({summary.group(0) if summary else 'no summary line'}; logs in {chosen[1].workdir})")
    except BenchError as error:
        print(f"bench_submit: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        for run in runs:
            run_command(["scancel", f"--name={run.name}"])
        print("bench_submit: interrupted", file=sys.stderr)
        return 130
    if not args.keep:
        for run in runs:
            shutil.rmtree(run.workdir, ignore_errors=True)
    else:
        err.print("kept: " + " ".join(str(run.workdir) for run in runs))
    report(args, *chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
