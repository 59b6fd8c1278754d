"""sacct report parsing and the efficiency formulas, on output recorded from the dev cluster (tests/data).

The seff_<job>.txt files are seff's own output for the same jobs: the figures here must match what seff
prints, to its printed precision, wherever slurmml uses seff's formula.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from slurmml.slurm.accounting import (
    SACCT_REPORT_FIELDS,
    JobRecord,
    cpu_efficiency,
    gpu_hours,
    memory_efficiency,
    parse_duration_s,
    parse_req_mem_mb,
    parse_sacct_report,
    parse_sacct_time,
    parse_size_mb,
    parse_timelimit_s,
    sacct_report_command,
    time_efficiency,
    unknown_sacct_field,
)

DATA = Path(__file__).resolve().parent.parent / "data"
# What sacct 22.05 accepts: SACCT_REPORT_FIELDS less Restarts (sacct_report_err_restarts.txt)
FIELDS_22_05 = [f for f in SACCT_REPORT_FIELDS if f != "Restarts"]
# The older recordings (sacct_mixed*.txt) were made with this --format
MIXED_FIELDS = FIELDS_22_05[:-1]


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def report(name: str = "sacct_report.txt", fields: list[str] = FIELDS_22_05) -> dict[str, JobRecord]:
    return {r.job_id: r for r in parse_sacct_report(recorded(name), fields)}


def local(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


# -- the command ----------------------------------------------------------------------------------------------

def test_command_names_every_report_field_and_the_jobs() -> None:
    argv = sacct_report_command(["95", "96_1"], since="2026-11-01")
    assert argv == ["sacct", "--noheader", "--parsable2", f"--format={','.join(SACCT_REPORT_FIELDS)}",
                    "--jobs=95,96_1", "--starttime=2026-11-01"]
    assert "--allocations" not in argv  # step lines carry MaxRSS and NTasks
    assert sacct_report_command(["7"], None, fields=FIELDS_22_05)[3] == f"--format={','.join(FIELDS_22_05)}"
    assert not any(a.startswith(("--jobs", "--starttime")) for a in sacct_report_command([], None))


def test_sacct_22_05_refuses_restarts_and_says_which_field() -> None:
    stderr = recorded("sacct_report_err_restarts.txt")
    assert unknown_sacct_field(stderr) == "Restarts"
    assert unknown_sacct_field("sacct: error: Problem talking to the database") is None


# -- parsing ---------------------------------------------------------------------------------------------------

def test_single_task_job_merges_its_batch_step() -> None:
    r = report()["4694"]
    assert (r.state, r.reason, r.exit_code, r.signal) == ("COMPLETED", "", 0, 0)
    assert (r.elapsed_s, r.timelimit_s, r.alloc_cpus, r.alloc_gpus) == (25, 120, 1, 0)
    assert r.req_mem_mb == 400
    assert r.total_cpu_s == pytest.approx(15.116)
    assert r.max_rss_mb == pytest.approx(219684 / 1024)
    assert (r.node_list, r.source, r.restarts) == ("vm", "sacct", 0)
    assert (r.submit, r.start, r.end) == (local("2026-11-23T10:26:38"), local("2026-11-23T10:26:39"),
                                          local("2026-11-23T10:27:04"))


def test_multi_task_step_counts_every_task() -> None:
    r = report()["4695"]
    # job line: TotalCPU is the sum of .batch (0.012) and .0 (6.213); MaxRSS: step .0's 218252K x NTasks 3
    assert r.total_cpu_s == pytest.approx(6.225)
    assert r.max_rss_mb == pytest.approx(218252 * 3 / 1024)
    assert (r.alloc_cpus, r.req_mem_mb) == (3, 900)


def test_largest_rss_times_ntasks_wins_over_largest_rss() -> None:
    r = report()["4700"]
    # .batch 270808K x 1 task, .0 166968K x 2 tasks: the two tasks together held more
    assert r.max_rss_mb == pytest.approx(166968 * 2 / 1024)


def test_timeout_gpu_job_and_cancelled_job() -> None:
    jobs = report()
    timeout = jobs["4696"]
    assert (timeout.state, timeout.exit_code, timeout.signal, timeout.alloc_gpus) == ("TIMEOUT", 0, 0, 2)
    assert (timeout.elapsed_s, timeout.timelimit_s) == (63, 60)
    cancelled = jobs["4703"]
    assert (cancelled.state, cancelled.reason, cancelled.alloc_gpus) == ("CANCELLED", "by 0", 1)
    assert cancelled.max_rss_mb == pytest.approx(66196 / 1024)


def test_recorded_quirks_of_the_mixed_jobs() -> None:
    jobs = report("sacct_mixed_steps.txt", MIXED_FIELDS)
    assert list(jobs) == ["95", "97", "98", "96_0", "96_1", "96_2"]
    assert (jobs["97"].state, jobs["97"].exit_code, jobs["97"].signal) == ("FAILED", 1, 0)
    assert (jobs["98"].state, jobs["98"].reason, jobs["98"].alloc_gpus) == ("CANCELLED", "by 0", 1)
    assert jobs["95"].timelimit_s == 300 and jobs["97"].timelimit_s is None  # UNLIMITED
    assert jobs["97"].max_rss_mb is None  # lived 1 s: no accounting poll, no MaxRSS
    assert jobs["97"].total_cpu_s == pytest.approx(0.003)
    later = report("sacct_report_mixed.txt")
    assert (later["98"].state, later["98"].reason, later["98"].signal) == ("CANCELLED", "", 15)
    assert later["95"].max_rss_mb == pytest.approx(93016 / 1024)


def test_backfill_timelimit_means_no_limit() -> None:
    (job,) = parse_sacct_report(recorded("sacct_timelimit_backfill.txt"), MIXED_FIELDS)
    assert (job.job_id, job.timelimit_s, time_efficiency(job)) == ("77", None, None)


def test_without_step_lines_cpu_and_memory_are_unknown_not_zero() -> None:
    # --allocations output: the allocation lines' TotalCPU is always 00:00:00
    jobs = report("sacct_mixed.txt", MIXED_FIELDS)
    assert all(r.total_cpu_s is None and r.max_rss_mb is None for r in jobs.values())
    assert cpu_efficiency(jobs["95"]) is None and memory_efficiency(jobs["95"]) is None
    assert jobs["95"].elapsed_s == 13


def test_pending_array_range_and_unknown_times() -> None:
    text = "|".join(["12_[3-5%2]", "12", "PENDING", "0:0", "00:00:00", "0", "01:00:00", "1", "", "00:00:00", "",
                     "", "1G", "None assigned", "Unknown", "Unknown", "2026-11-23T10:00:00", "JobArrayTaskLimit"])
    records = parse_sacct_report(text + "\n", FIELDS_22_05)
    assert [r.job_id for r in records] == ["12_3", "12_4", "12_5"]
    r = records[0]
    assert (r.state, r.reason, r.start, r.end, r.alloc_gpus, r.req_mem_mb) == (
        "PENDING", "JobArrayTaskLimit", None, None, None, 1024)
    assert gpu_hours(r) is None


def test_restarts_is_read_where_sacct_prints_it() -> None:
    line = "5|5|COMPLETED|0:0|00:00:10|10|00:01:00|1|cpu=1,mem=1G,node=1|00:01.000|||1G|vm|" \
           "2026-11-23T10:00:00|2026-11-23T10:00:10|2026-11-23T10:00:00|2|None\n" \
           "5.batch|5.batch|COMPLETED|0:0|00:00:10|10||1|cpu=1,mem=1G,node=1|00:01.000|2048|1||vm|" \
           "2026-11-23T10:00:00|2026-11-23T10:00:10|2026-11-23T10:00:00||\n"
    with_restarts = [*SACCT_REPORT_FIELDS[:-1], "Restarts", "Reason"]  # newer sacct prints it
    (r,) = parse_sacct_report(line, with_restarts)
    assert r.restarts == 2
    assert r.max_rss_mb == pytest.approx(2048 / 1024 ** 2)  # a bare MaxRSS is in bytes


def test_malformed_lines_are_skipped() -> None:
    assert parse_sacct_report("garbage\n\n1|2|3\n", FIELDS_22_05) == []


@pytest.mark.parametrize("text, seconds", [
    ("00:00.164", 0.164), ("00:15.116", 15.116), ("00:00:13", 13), ("01:02:03", 3723), ("2-03:04:05", 183845),
    ("1-00", 86400), ("5", 300), ("UNLIMITED", None), ("", None), ("Unknown", None),
])
def test_durations(text: str, seconds: float | None) -> None:
    assert parse_duration_s(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_timelimits() -> None:
    assert parse_timelimit_s("00:05:00") == 300
    assert parse_timelimit_s("365-00:00:00") is None  # backfill's "no limit"
    assert parse_timelimit_s("364-00:00:00") == 364 * 86400
    assert parse_timelimit_s("Partition_Limit") is None


@pytest.mark.parametrize("text, cpus, nodes, mb", [
    ("256M", 1, 1, 256), ("4G", 4, 1, 4096), ("900M", 3, 1, 900), ("2000Mn", 8, 2, 4000), ("500Mc", 8, 2, 4000),
    ("1.50G", 1, 1, 1536), ("0", 1, 1, 0), ("", 1, 1, None),
])
def test_requested_memory_for_the_whole_job(text: str, cpus: int, nodes: int, mb: float | None) -> None:
    assert parse_req_mem_mb(text, cpus, nodes) == mb


def test_sizes_and_times() -> None:
    assert parse_size_mb("93016K", "B") == pytest.approx(90.8359375)
    assert parse_size_mb("0", "B") == 0
    assert parse_size_mb("", "B") is None
    assert parse_sacct_time("None") is None and parse_sacct_time("Unknown") is None
    assert parse_sacct_time("2026-11-23T09:19:48") == local("2026-11-23T09:19:48")


# -- efficiency figures against seff's own output -------------------------------------------------------------

def seff(job_id: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in recorded(f"seff_{job_id}.txt").splitlines() if ": " in line)


def percent(text: str) -> float:
    return float(re.match(r"([0-9.]+)%", text).group(1))


def mb(text: str) -> float:
    value, unit = re.match(r"([0-9.]+) ([KMG])B", text).groups()
    return float(value) * {"K": 1 / 1024, "M": 1, "G": 1024}[unit]


ALL_SEFF_JOBS = ["4694", "4695", "4696", "4700", "4703", "95", "97", "98"]


def records_for_seff() -> dict[str, JobRecord]:
    return {**report(), **report("sacct_report_mixed.txt")}


@pytest.mark.parametrize("job_id", ALL_SEFF_JOBS)
def test_cpu_efficiency_agrees_with_seff(job_id: str) -> None:
    r = records_for_seff()[job_id]
    printed = seff(job_id)
    # seff rounds the CPU time to whole seconds before dividing; with the same rounding the figures are equal
    rounded = JobRecord(**{**r.__dict__, "total_cpu_s": float(round(r.total_cpu_s))})
    assert f"{100 * cpu_efficiency(rounded):.2f}" == f"{percent(printed['CPU Efficiency']):.2f}"
    # and slurmml's unrounded figure is off by no more than half a second of CPU over the core-walltime
    assert abs(cpu_efficiency(r) - cpu_efficiency(rounded)) <= 0.5 / (r.elapsed_s * r.alloc_cpus)
    assert printed["Job Wall-clock time"] == time.strftime("%H:%M:%S", time.gmtime(r.elapsed_s))
    assert f"of {time.strftime('%H:%M:%S', time.gmtime(r.elapsed_s * r.alloc_cpus))} core-walltime" in \
        printed["CPU Efficiency"]


@pytest.mark.parametrize("job_id", ["4694", "4695", "4696", "4703", "95"])
def test_memory_efficiency_agrees_with_seff(job_id: str) -> None:
    r = records_for_seff()[job_id]
    printed = seff(job_id)
    assert f"{r.max_rss_mb:.2f}" == f"{mb(printed['Memory Utilized']):.2f}"
    assert f"{100 * memory_efficiency(r):.2f}" == f"{percent(printed['Memory Efficiency']):.2f}"
    assert f"of {r.req_mem_mb:.2f} MB" in printed["Memory Efficiency"]


def test_multi_task_job_memory_is_seffs_estimated_maximum() -> None:
    printed = seff("4695")
    assert printed["Memory Utilized"] == "639.41 MB (estimated maximum)"
    assert printed["Memory Efficiency"] == "71.05% of 900.00 MB (300.00 MB/core)"
    r = records_for_seff()["4695"]
    assert (round(r.max_rss_mb, 2), round(100 * memory_efficiency(r), 2)) == (639.41, 71.05)


def test_where_seff_22_05_takes_the_wrong_step() -> None:
    """Job 4700: seff 22.05 multiplies the largest per-task MaxRSS (the 1-task batch step) by that step's
    NTasks; slurmml takes the largest MaxRSS x NTasks over all steps (the 2-task srun step), which is what
    later seff releases report too (the step's TRESUsageInTot, 333936K here)."""
    printed = seff("4700")
    assert (printed["Memory Utilized"], printed["Memory Efficiency"]) == ("264.46 MB", "33.06% of 800.00 MB")
    r = records_for_seff()["4700"]
    assert f"{270808 / 1024:.2f}" == "264.46"  # seff's step
    assert round(r.max_rss_mb, 2) == round(333936 / 1024, 2) == 326.11
    assert round(100 * memory_efficiency(r), 2) == 40.76


def test_jobs_without_memory_samples_seff_says_zero_slurmml_says_unknown() -> None:
    for job_id in ("97", "98"):
        assert seff(job_id)["Memory Utilized"].startswith("0.00 MB")
        assert memory_efficiency(records_for_seff()[job_id]) is None


def test_time_efficiency_and_gpu_hours() -> None:
    jobs = report()
    assert time_efficiency(jobs["4694"]) == pytest.approx(25 / 120)
    assert time_efficiency(jobs["4696"]) == pytest.approx(63 / 60)  # TIMEOUT: a little past the limit
    assert gpu_hours(jobs["4696"]) == pytest.approx(63 * 2 / 3600)
    assert gpu_hours(jobs["4703"]) == pytest.approx(20 / 3600)
    assert gpu_hours(jobs["4694"]) == 0
    assert cpu_efficiency(jobs["4694"]) == pytest.approx(15.116 / 25)


def test_formulas_return_none_when_not_computable() -> None:
    empty = JobRecord(job_id="1", state="PENDING")
    assert [f(empty) for f in (cpu_efficiency, memory_efficiency, time_efficiency, gpu_hours)] == [None] * 4
    zero = JobRecord(job_id="1", state="RUNNING", elapsed_s=0, alloc_cpus=1, total_cpu_s=0.0, req_mem_mb=0,
                     max_rss_mb=1.0, timelimit_s=None)
    assert (cpu_efficiency(zero), memory_efficiency(zero), time_efficiency(zero)) == (None, None, None)
