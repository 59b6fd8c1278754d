"""`slurmml report` on a real registry file: runs from spools, Slurm's view from recorded sacct output."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurmml.cli import main
from slurmml.cli.report import report as report_command
from slurmml.errors import SlurmmlError
from slurmml.registry.registry import Registry
from slurmml.report.aggregate import aggregate, distinguishing_labels, failure_cause, reconcile_state
from slurmml.report.collect import build_report, parse_when
from slurmml.report.html import render_html, write_html
from slurmml.report.html_charts import histogram_counts, nice_ticks
from slurmml.report.model import Inputs
from slurmml.slurm.accounting import SACCT_REPORT_FIELDS, JobRecord, parse_sacct_report
from slurmml.tracking.spool import encode

DATA = Path(__file__).resolve().parent.parent / "data"
FIELDS_22_05 = [f for f in SACCT_REPORT_FIELDS if f != "Restarts"]
TRACEBACK = 'Traceback (most recent call last):\n  File "train.py", line 9, in main\n    raise ValueError(\n' \
            "ValueError: lr too large: loss is nan\n"

# run id -> (overrides, Slurm job id recorded in tests/data, final val_acc or None, GPU utilization or None, end)
SWEEP_1 = {
    "s1-0": (["lr=0.1", "model=mlp"], "4694", 0.80, None, ("COMPLETED", 0, None)),
    "s1-1": (["lr=0.01", "model=mlp"], "4695", 0.90, None, ("COMPLETED", 0, None)),
    "s1-2": (["lr=0.001", "model=mlp"], "4700", 0.85, None, ("COMPLETED", 0, None)),
    "s1-3": (["lr=0.3", "model=mlp"], "4696", 0.50, 85.0, None),  # TIMEOUT, 2 GPUs busy
    "s1-4": (["lr=0.03", "model=mlp"], "4703", 0.60, 3.0, None),  # CANCELLED, its GPU idle
    "s1-5": (["lr=3.0", "model=mlp"], "97", None, None, ("FAILED", 1, TRACEBACK)),
}
SWEEP_2 = {
    "s2-0": (["seed=0"], "96_0", None, None, ("COMPLETED", 0, None)),
    "s2-1": (["seed=1"], "96_1", None, None, ("COMPLETED", 0, None)),
    "s2-2": (["seed=2"], "96_2", None, None, ("COMPLETED", 0, None)),
    "s2-3": (["seed=3"], "98", None, None, None),  # CANCELLED, 1 GPU, no samples
    "s2-4": (["seed=4"], "5000", None, 50.0, None),  # the poller has not seen it yet: RUNNING for the registry
    "s2-5": (["seed=5"], "5001", None, None, None),  # declared LOST by the launcher
}
START = 1_800_000_000.0


def _write(path: Path, *records: dict) -> None:
    with open(path, "ab") as handle:
        handle.write(b"".join(encode(r) for r in records))


def _add_sweep(registry: Registry, tmp_path: Path, sweep_id: str, name: str, user: str, runs: dict) -> None:
    registry.add_sweep({"id": sweep_id, "name": name, "user": user, "created": START, "argv": ["train.py", "-m"],
                        "sweep_dir": str(tmp_path), "backend": "slurm"},
                       [{"id": run_id, "job_num": i, "overrides": spec[0], "spool_path": str(tmp_path / f"{run_id}.jsonl")}
                        for i, (run_id, spec) in enumerate(runs.items())])
    registry.mark_queued({run_id: (spec[1], f"/logs/{run_id}.out") for run_id, spec in runs.items()})
    for run_id, (overrides, _job, final, util, end) in runs.items():
        spool = tmp_path / f"{run_id}.jsonl"
        records: list[dict] = [{"k": "start", "t": START + 10, "host": "vm", "run_dir": f"/out/{run_id}",
                                "config": {"lr": float(overrides[0].split("=")[1]) if "lr=" in overrides[0] else 0.1}}]
        if final is not None:
            for step in range(0, 11):
                records.append({"k": "m", "t": START + 11 + step, "s": step,
                                "v": {"val_acc": final * (1 - math.exp(-step / 3)) / (1 - math.exp(-10 / 3)),
                                      "loss": 2.0 / (step + 1)}})
        if util is not None:
            gpus = 2 if run_id == "s1-3" else 1
            for t in range(5):
                for gpu in range(gpus):
                    records.append({"k": "gpu", "t": START + 12 + t, "gpu": gpu, "uuid": f"GPU-{run_id}-{gpu}",
                                    "util": util + (t - 2), "mem_used": 1000.0 + 100 * t, "mem_total": 16000.0})
        if end is not None:
            records.append({"k": "end", "t": START + 40, "state": end[0], "exit_code": end[1], "error": end[2]})
        _write(spool, *records)


def make_registry(tmp_path: Path, with_accounting: bool = True) -> Registry:
    registry = Registry(tmp_path / "registry.db")
    _add_sweep(registry, tmp_path, "s1", "lr-sweep", "alice", SWEEP_1)
    _add_sweep(registry, tmp_path, "s2", "seeds", "bob", SWEEP_2)
    registry.ingest()
    registry.mark_final({"s2-5": ("LOST", "Slurm job 5001 left the queue without a result, and sacct has no record")},
                        source="launcher")
    if with_accounting:
        text = (DATA / "sacct_report.txt").read_text() + (DATA / "sacct_report_mixed.txt").read_text()
        registry.store_job_records(parse_sacct_report(text, FIELDS_22_05, updated=START + 100))
    return registry


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return make_registry(tmp_path)


def runs_by_id(report) -> dict:
    return {r.run_id: r for r in report.runs}


# -- per run ----------------------------------------------------------------------------------------------------

def test_per_run_figures_come_from_the_recorded_accounting(registry: Registry) -> None:
    report = build_report(registry, metric="val_acc", mode="max", now=START + 200)
    runs = runs_by_id(report)
    single = runs["s1-0"]
    assert (single.state, single.accounting, single.slurm_job_id, single.elapsed_s) == ("COMPLETED", "sacct", "4694", 25)
    assert single.cpu_eff == pytest.approx(15.116 / 25)
    assert single.mem_eff == pytest.approx(219684 / 1024 / 400)
    assert single.time_eff == pytest.approx(25 / 120)
    assert single.gpu_hours == 0 and single.idle_gpu is None
    multi = runs["s1-1"]
    assert multi.mem_eff == pytest.approx(218252 * 3 / 1024 / 900)  # seff: 71.05%
    assert multi.cpu_eff == pytest.approx(6.225 / (26 * 3))
    timeout = runs["s1-3"]
    assert (timeout.state, timeout.run_state, timeout.alloc_gpus) == ("TIMEOUT", "RUNNING", 2)
    assert timeout.gpu_hours == pytest.approx(63 * 2 / 3600)
    assert timeout.gpu_util == pytest.approx(85.0) and timeout.idle_gpu is False
    assert timeout.gpu_mem_max_mb == 1400.0 and timeout.gpu_samples == 10
    cancelled = runs["s1-4"]
    assert (cancelled.state, cancelled.reason, cancelled.idle_gpu) == ("CANCELLED", "by 0", True)
    failed = runs["s1-5"]
    assert (failed.state, failed.exit_code, failed.signal) == ("FAILED", 1, 0)
    assert failed.cause == "FAILED: exit 1, ValueError"
    assert failed.metric is None and runs["s1-1"].metric == pytest.approx(0.90)


def test_runs_without_accounting_fall_back_to_their_own_record(registry: Registry) -> None:
    report = build_report(registry, sweep="s2", now=START + 200)
    pending = runs_by_id(report)["s2-4"]
    assert (pending.accounting, pending.state, pending.slurm_state) == ("registry", "RUNNING", None)
    assert pending.elapsed_s == pytest.approx(190)  # started at START + 10, still running at START + 200
    assert pending.alloc_gpus == 1  # the GPU its sampler saw
    assert pending.gpu_hours == pytest.approx(190 / 3600)
    assert pending.cpu_eff is None and pending.mem_eff is None
    assert report.unaccounted == ["s2-4", "s2-5"]
    lost = runs_by_id(report)["s2-5"]
    assert (lost.state, lost.accounting) == ("LOST", "registry")


def test_without_any_accounting_every_slurm_run_is_marked(tmp_path: Path) -> None:
    report = build_report(make_registry(tmp_path, with_accounting=False), now=START + 200)
    assert all(r.accounting == "registry" for r in report.runs)
    assert len(report.unaccounted) == 12
    completed = runs_by_id(report)["s1-0"]
    assert (completed.state, completed.elapsed_s, completed.cpu_eff) == ("COMPLETED", 30.0, None)


# -- aggregates ------------------------------------------------------------------------------------------------

def test_per_sweep_aggregates(registry: Registry) -> None:
    report = build_report(registry, metric="val_acc", mode="max", now=START + 200)
    s1, s2 = report.sweeps
    assert (s1.sweep_id, s1.name, s1.user, s1.runs) == ("s1", "lr-sweep", "alice", 6)
    assert s1.states == {"COMPLETED": 3, "CANCELLED": 1, "FAILED": 1, "TIMEOUT": 1}
    assert (s1.completed, s1.failed, s1.active, s1.accounted) == (3, 3, 0, 6)
    cpu = 15.116 + 6.225 + 0.635 + 0.002 + 0.002 + 0.003
    core = 25 * 1 + 26 * 3 + 29 * 2 + 63 * 1 + 20 * 1 + 1 * 1
    assert s1.cpu_eff == pytest.approx(cpu / core)
    memory = [219684 / 1024 / 400, 218252 * 3 / 1024 / 900, 166968 * 2 / 1024 / 800, 3280 / 1024 / 256,
              66196 / 1024 / 256]
    assert s1.mem_eff == pytest.approx(sum(memory) / len(memory))  # 97 lived 1 s: no MaxRSS
    limits = [25 / 120, 26 / 180, 29 / 180, 63 / 60, 20 / 600]  # 97 had no limit
    assert s1.time_eff == pytest.approx(sum(limits) / len(limits))
    assert s1.gpu_hours == pytest.approx((63 * 2 + 20) / 3600)
    assert s1.gpu_hours_failed == pytest.approx((63 * 2 + 20) / 3600)
    assert s1.gpu_hours_idle == pytest.approx(20 / 3600)
    assert (s1.best_run, s1.best_value) == ("s1-1", pytest.approx(0.90))
    assert (s2.runs, s2.states["COMPLETED"], s2.failed, s2.active, s2.accounted) == (6, 3, 2, 1, 4)
    totals = report.totals
    assert (totals.runs, totals.completed, totals.failed) == (12, 6, 5)


def test_failures_are_grouped_by_cause(registry: Registry) -> None:
    report = build_report(registry, now=START + 200)
    groups = {g.cause: g for g in report.failures}
    assert set(groups) == {"CANCELLED", "TIMEOUT", "FAILED: exit 1, ValueError",
                           "LOST: Slurm job N left the queue without a result, and sacct has no record"}
    assert groups["CANCELLED"].count == 2 and groups["CANCELLED"].runs == ["s1-4", "s2-3"]
    assert groups["CANCELLED"].gpu_hours == pytest.approx((20 + 3) / 3600)
    assert groups["CANCELLED"].example == "by 0"
    assert groups["FAILED: exit 1, ValueError"].example == "ValueError: lr too large: loss is nan"
    assert report.failures[0].cause == "CANCELLED"  # most frequent first


def test_gpu_hours_by_state(registry: Registry) -> None:
    report = build_report(registry, now=START + 200)
    assert report.gpu_hours_by_state == pytest.approx({"TIMEOUT": 126 / 3600, "CANCELLED": 23 / 3600,
                                                       "RUNNING": 190 / 3600})
    assert list(report.gpu_hours_by_state) == ["RUNNING", "TIMEOUT", "CANCELLED"]


def test_best_runs_with_curves_and_distinguishing_labels(registry: Registry) -> None:
    report = build_report(registry, metric="val_acc", mode="max", now=START + 200)
    assert [b.run_id for b in report.best] == ["s1-1", "s1-2", "s1-0"]  # s1-4 CANCELLED, s1-3 TIMEOUT: not best
    assert [b.label for b in report.best] == ["lr=0.01", "lr=0.001", "lr=0.1"]
    assert len(report.best[0].curve) == 11 and report.best[0].curve[-1] == (10, pytest.approx(0.90))
    lowest = build_report(registry, metric="val_acc", mode="min", now=START + 200)
    assert lowest.best[0].run_id == "s1-0"  # the lowest val_acc of the runs that did not fail


def test_metric_is_picked_when_not_given(registry: Registry) -> None:
    report = build_report(registry, metric=None, now=START + 200)
    assert (report.metric, report.mode, report.metric_picked) == ("val_acc", "max", True)
    assert build_report(registry, metric="loss", mode=None, now=START + 200).mode == "min"


def test_filters_by_user_and_time_window(registry: Registry) -> None:
    assert {r.sweep_id for r in build_report(registry, user="bob").runs} == {"s2"}
    assert build_report(registry, user="carol").runs == []
    registry.conn.execute("UPDATE runs SET created = ? WHERE sweep_id = 's1'", (START,))
    registry.conn.execute("UPDATE runs SET created = ? WHERE sweep_id = 's2'", (START + 86400,))
    window = build_report(registry, since=START - 1, until=START + 3600)
    assert {r.sweep_id for r in window.runs} == {"s1"}
    later = build_report(registry, since=START + 3600)
    assert {r.sweep_id for r in later.runs} == {"s2"}


# -- pure parts ------------------------------------------------------------------------------------------------

def test_reconcile_state() -> None:
    job = JobRecord(job_id="1", state="COMPLETED")
    assert reconcile_state("FAILED", job) == "FAILED"  # the task raised, the job exited 0 (hydra 1928)
    assert reconcile_state("RUNNING", JobRecord(job_id="1", state="TIMEOUT")) == "TIMEOUT"
    assert reconcile_state("COMPLETED", JobRecord(job_id="1", state="RUNNING", source="squeue")) == "COMPLETED"
    assert reconcile_state("QUEUED", JobRecord(job_id="1", state="PENDING", source="squeue")) == "QUEUED"
    assert reconcile_state("OUT_OF_MEMORY", JobRecord(job_id="1", state="FAILED")) == "OUT_OF_MEMORY"  # poller settled
    assert reconcile_state("RUNNING", None) == "RUNNING"


def test_failure_causes() -> None:
    assert failure_cause("COMPLETED", 0, 0, None) == ""
    assert failure_cause("FAILED", 0, 9, None) == "FAILED: signal 9"
    assert failure_cause("FAILED", 2, 0, "Traceback ...\ntorch.cuda.OutOfMemoryError: CUDA out of memory") == \
        "FAILED: exit 2, torch.cuda.OutOfMemoryError"
    assert failure_cause("FAILED", 1, 0, "something went wrong") == "FAILED: exit 1"
    assert failure_cause("LOST", None, None, "process 4242 on node17 ended without recording its end") == \
        "LOST: process N on HOST ended without recording its end"
    assert failure_cause("OUT_OF_MEMORY", 0, 125, None) == "OUT_OF_MEMORY"


def test_labels_and_times() -> None:
    assert distinguishing_labels([["a=1", "b=2"], ["a=1", "b=3"]]) == ["b=2", "b=3"]
    assert parse_when("7d", now=1_000_000.0) == 1_000_000.0 - 7 * 86400
    assert parse_when("2026-11-01") < parse_when("2026-11-01T10:30") < parse_when("2026-11-02")
    assert parse_when(None) is None
    with pytest.raises(Exception, match="cannot read time"):
        parse_when("last tuesday")


def test_per_run_figures_read_in_chunks_add_up_to_one_read(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from slurmml.registry import report_reads

    whole = build_report(registry, metric=None, now=START + 200).to_dict()
    monkeypatch.setattr(report_reads, "CHUNK", 2)  # 12 runs: six statements for each per-run figure
    assert build_report(registry, metric=None, now=START + 200).to_dict() == whole
    assert whole["metric"] == "val_acc" and whole["totals"]["gpu_util"] is not None


def test_aggregate_is_pure_on_plain_rows() -> None:
    runs = [{"id": "x-0", "sweep_id": "x", "job_num": 0, "overrides": ["a=1"], "state": "COMPLETED",
             "slurm_job_id": "7", "exit_code": 0, "error": None, "created": 1.0, "started": 2.0, "ended": 12.0,
             "sweep_name": None, "user": "u"}]
    record = JobRecord(job_id="7", state="COMPLETED", elapsed_s=10, alloc_cpus=2, total_cpu_s=5.0, alloc_gpus=4,
                       req_mem_mb=1000.0, max_rss_mb=250.0, timelimit_s=100, source="sacct")
    inputs = Inputs(runs, {"7": record}, {"x-0": {"count": 3, "util": 5.0, "mem_max": 1.0, "mem_total": 2.0, "gpus": 4}},
                    {"x-0": 0.5})
    report = aggregate(inputs, metric="acc", now=100.0)
    row = report.runs[0]
    assert (row.cpu_eff, row.mem_eff, row.time_eff, row.gpu_hours, row.idle_gpu) == (0.25, 0.25, 0.1, 40 / 3600, True)
    assert report.totals.gpu_hours_idle == pytest.approx(40 / 3600)
    assert json.loads(json.dumps(report.to_dict()))["runs"][0]["run_id"] == "x-0"


def test_gpu_hours_count_every_execution_and_say_what_the_requeues_cost() -> None:
    # sacct describes the last execution (10 s on 4 GPUs); two earlier ones ran 90 s before their requeues
    runs = [{"id": "x-0", "sweep_id": "x", "job_num": 0, "overrides": [], "state": "COMPLETED", "slurm_job_id": "7",
             "exit_code": 0, "error": None, "created": 1.0, "started": 2.0, "ended": 300.0, "sweep_name": None,
             "user": "u", "executions": 3, "requeued_s": 90.0, "repeated_steps": 12}]
    record = JobRecord(job_id="7", state="COMPLETED", elapsed_s=10, alloc_cpus=2, alloc_gpus=4, source="sacct")
    report = aggregate(Inputs(runs, {"7": record}, {}, {}), metric=None, now=400.0)
    row = report.runs[0]
    assert (row.executions, row.repeated_steps) == (3, 12)
    assert row.gpu_hours_requeued == pytest.approx(360 / 3600) and row.gpu_hours == pytest.approx(400 / 3600)
    assert report.totals.gpu_hours_requeued == pytest.approx(0.1) and report.totals.repeated_steps == 12


def test_histogram_bins_and_ticks() -> None:
    assert histogram_counts([0.0, 0.05, 0.1, 0.99, 1.0, 1.05, float("nan")]) == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1]
    assert nice_ticks(0, 0.9) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(5, 5)[0] <= 5 <= nice_ticks(5, 5)[-1]


# -- the command --------------------------------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SLURMML_HOME", str(tmp_path))
    make_registry(tmp_path).close()
    return tmp_path


def test_cli_json(home: Path) -> None:
    result = CliRunner().invoke(report_command, ["--json", "--metric", "val_acc"])
    assert result.exit_code == 0, result.output + result.stderr
    data = json.loads(result.stdout)
    assert data["totals"]["runs"] == 12 and data["metric"] == "val_acc"
    assert [s["sweep_id"] for s in data["sweeps"]] == ["s1", "s2"]
    assert data["best"][0]["run_id"] == "s1-1" and len(data["best"][0]["curve"]) == 11
    assert {f["cause"] for f in data["failures"]} >= {"TIMEOUT", "CANCELLED"}
    assert "2 of 12 Slurm runs have no accounting record yet" in result.stderr
    assert "until sacct has answered" in result.stderr


def test_cli_csv_has_one_row_per_run(home: Path) -> None:
    result = CliRunner().invoke(report_command, ["--csv", "--sweep", "s1", "--metric", "val_acc"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["run_id"] for r in rows] == [f"s1-{i}" for i in range(6)]
    assert float(rows[1]["mem_eff"]) == pytest.approx(218252 * 3 / 1024 / 900)
    assert rows[1]["val_acc"] == "0.9" and rows[3]["state"] == "TIMEOUT"
    assert result.stderr == ""  # every s1 run has an accounting record


def test_cli_warns_once_when_no_accounting_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURMML_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    make_registry(tmp_path, with_accounting=False).close()
    result = CliRunner().invoke(report_command, [])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == ["slurmml: warning: these runs have no accounting record yet: their figures come from the "
                        "runs' own records until sacct has answered (at most once a minute, for every slurmml "
                        "command)"]
    assert "per sweep" in result.stdout and "s1-0*" in result.stdout


def test_cli_table(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(report_command, ["--metric", "val_acc"])
    assert result.exit_code == 0, result.output
    for text in ("12 runs: 6 completed, 5 failed, 1 active", "per sweep", "failures by cause", "GPU-hours by state",
                 "best runs by val_acc", "FAILED: exit 1, ValueError", "71.0%", "lr=0.01 model=mlp"):
        assert text in result.stdout


def test_cli_html_is_one_self_contained_file(home: Path) -> None:
    out = home / "report.html"
    result = CliRunner().invoke(report_command, ["--html", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {out}")
    page = out.read_text()
    assert page.count("<svg") >= 5  # curves, three histograms, GPU-hours
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page)
    assert "http" not in page
    for text in ("val_acc", "lr=0.01", "Failures by cause", "GPU-hours", "CPU efficiency", "LOST"):
        assert text in page
    assert list(home.iterdir()).count(out) == 1 and not (home / "report_files").exists()


def test_cli_refuses_two_formats(home: Path) -> None:
    result = CliRunner().invoke(report_command, ["--json", "--csv"])
    assert result.exit_code != 0


def test_html_escapes_what_runs_recorded(registry: Registry) -> None:
    registry.conn.execute("""UPDATE runs SET overrides = '["name=<b>x</b>"]' WHERE id = 's1-1'""")
    page = render_html(build_report(registry, metric="val_acc", now=START + 200))
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_report_modules_import_nothing_heavy() -> None:
    import subprocess
    import sys

    code = ("import sys, slurmml.cli.report, slurmml.report.collect, slurmml.report.html, slurmml.slurm.accounting; "
            "print('\\n'.join(sys.modules))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert loaded & {"rich", "hydra", "submitit", "torch", "textual", "boto3", "pynvml", "sqlite3"} == set()


def _main(args: list[str]):
    return CliRunner().invoke(main, args)


def test_cli_html_into_a_missing_folder_is_one_line(home: Path) -> None:
    result = _main(["report", "--html", "/no/such/dir/x.html"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "slurmml: cannot write the report to /no/such/dir/x.html: folder /no/such/dir does not exist\n"
    assert not Path("/no/such/dir").exists()
    (home / "a-file").write_text("")
    with pytest.raises(SlurmmlError, match=r"^cannot write the report to .*a-file/x.html: Not a directory$"):
        write_html(build_report(make_registry(home / "a"), now=START), home / "a-file" / "x.html")


def test_cli_report_of_an_unknown_sweep_says_so_as_status_does(home: Path) -> None:
    report = _main(["report", "--sweep", "nope"])
    status = _main(["status", "nope"])
    assert report.exit_code == status.exit_code == 1 and report.stdout == ""
    assert report.stderr == status.stderr == \
        f"slurmml: no sweep 'nope': not a sweep directory, and no sweep with that id in {home}\n"
    assert _main(["runs", "--sweep", "nope"]).stderr == report.stderr


def test_a_job_too_short_for_slurms_memory_sampling_uses_the_runs_own_peak(tmp_path: Path) -> None:
    """96_0 ran 2 s: sacct recorded no MaxRSS (JobAcctGatherFrequency is longer); its end record has the peak."""
    registry = Registry(tmp_path / "registry.db")
    runs = {"m-0": (["x=0"], "96_0"), "m-1": (["x=1"], "4694")}
    registry.add_sweep({"id": "m", "created": START, "argv": [], "sweep_dir": str(tmp_path), "backend": "slurm"},
                       [{"id": run_id, "job_num": i, "overrides": spec[0], "spool_path": str(tmp_path / f"{run_id}.jsonl")}
                        for i, (run_id, spec) in enumerate(runs.items())])
    registry.mark_queued({run_id: (spec[1], f"/logs/{run_id}.out") for run_id, spec in runs.items()})
    for run_id in runs:
        _write(tmp_path / f"{run_id}.jsonl", {"k": "start", "t": START + 1},
               {"k": "end", "t": START + 3, "state": "COMPLETED", "exit_code": 0, "max_rss_mb": 64.0})
    registry.ingest()
    text = (DATA / "sacct_report.txt").read_text() + (DATA / "sacct_report_mixed.txt").read_text()
    registry.store_job_records(parse_sacct_report(text, FIELDS_22_05, updated=START + 100))
    rows = runs_by_id(build_report(registry, sweep="m"))
    assert (rows["m-0"].max_rss_mb, rows["m-0"].mem_eff) == (64.0, 0.25)  # of the 256 MB Slurm gave it
    assert rows["m-1"].max_rss_mb == pytest.approx(219684 / 1024)  # sacct's sample wins where there is one


def test_an_ended_run_with_only_squeues_last_look_is_unaccounted_and_shows_no_live_state(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    registry.store_job_records([JobRecord(job_id="4694", state="RUNNING", source="squeue", updated=START + 20)])
    report = build_report(registry, sweep="s1")
    row = runs_by_id(report)["s1-0"]
    assert (row.state, row.slurm_state, row.cpu_eff) == ("COMPLETED", None, None)  # never RUNNING once ended
    assert "s1-0" in report.unaccounted
