"""Parsers run on output recorded from Slurm 22.05 (tests/data/ and tests/unit/data/)."""

from pathlib import Path

import pytest

from slurmml.slurm.cluster import SLURM_DEFAULT_MAX_ARRAY_SIZE, read_cluster_facts
from slurmml.slurm.commands import CommandResult
from slurmml.slurm.parse import (
    Partition,
    gpus_in_gres,
    parse_job_id,
    parse_scontrol_config,
    parse_sinfo_partitions,
    parse_slurm_time_min,
    parse_squeue,
    sbatch_error_line,
)

DATA = Path(__file__).parent.parent / "data"
UNIT_DATA = Path(__file__).parent / "data"


def recorded(name: str) -> str:
    path = UNIT_DATA / name if (UNIT_DATA / name).exists() else DATA / name
    return path.read_text()


# --- scontrol / sinfo ------------------------------------------------------------

def test_scontrol_config_from_recording():
    config = parse_scontrol_config(recorded("scontrol_show_config.txt"))
    assert config["MaxArraySize"] == "10001"
    assert config["KillWait"] == "2 sec"
    # values that contain '=' themselves stay whole
    assert config["SchedulerParameters"].startswith("sched_interval=2,")
    # the header and footer lines are not taken for settings
    assert not any(key.startswith(("Configuration data", "Slurmctld(primary)")) for key in config)
    assert config["SlurmctldPort"] == "6817"


def test_sinfo_partitions_from_recording():
    partitions = {p.name: p for p in parse_sinfo_partitions(recorded("sinfo_partitions.txt"))}
    assert set(partitions) == {"gpu", "cpu"}
    assert partitions["gpu"] == Partition("gpu", True, 32, 16000, 4, 1, None, True)
    assert partitions["cpu"].default is False
    assert partitions["cpu"].cpus_per_node == 32


def test_sinfo_rows_of_one_partition_are_merged():
    text = "big*|64|512000|gpu:a100:8(S:0-1)|2|2-00:00:00|up\nbig*|32+|256000|(null)|10|2-00:00:00|up\n"
    [big] = parse_sinfo_partitions(text)
    assert (big.cpus_per_node, big.mem_mb_per_node, big.gpus_per_node, big.nodes) == (64, 512000, 8, 12)
    assert big.max_time_min == 2 * 24 * 60 and big.default


def test_read_cluster_facts_uses_recordings_and_falls_back():
    outputs = {"scontrol": recorded("scontrol_show_config.txt"), "sinfo": recorded("sinfo_partitions.txt")}
    facts = read_cluster_facts(run=lambda argv: CommandResult(tuple(argv), 0, outputs[argv[0]], ""))
    assert facts.max_array_size == 10001
    assert sorted(p.name for p in facts.partitions) == ["cpu", "gpu"]

    down = read_cluster_facts(run=lambda argv: CommandResult(tuple(argv), 1, "", "Unable to contact slurm controller"))
    assert down.max_array_size == SLURM_DEFAULT_MAX_ARRAY_SIZE and down.partitions == []


@pytest.mark.parametrize(
    "gres, gpus",
    [
        ("gpu:4", 4),
        ("gpu:a100:2(S:0-1)", 2),
        ("gpu:4,shard:8", 4),
        ("(null)", 0),
        ("gpu:tesla:2,gpu:a100:1", 3),
        ("shard:8", 0),
        ("gpu:1g.10gb:7", 7),
    ],
)
def test_gpus_in_gres(gres, gpus):
    assert gpus_in_gres(gres) == gpus


def test_gpus_in_gres_with_non_contiguous_sockets():
    assert gpus_in_gres("gpu:a100:4(S:0,2)") == 4


@pytest.mark.parametrize(
    "text, minutes",
    [("infinite", None), ("UNLIMITED", None), ("1-00:00:00", 1440), ("2:00:00", 120),
     ("30:00", 30), ("5", 5), ("00:00:30", 1), ("1-02:03:01", 1440 + 123 + 1)],
)
def test_parse_slurm_time_min(text, minutes):
    assert parse_slurm_time_min(text) == minutes


# --- sbatch -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, expected",
    [
        ("sbatch_err_unknown_partition.txt", "Invalid partition name specified"),
        ("sbatch_err_too_many_gpus.txt", "Requested node configuration is not available"),
        ("sbatch_err_array_too_big.txt", "Invalid job array specification"),
        ("sbatch_err_invalid_time.txt", "Invalid --time specification"),
    ],
)
def test_sbatch_error_line_on_recorded_refusals(name, expected):
    line = sbatch_error_line(recorded(name))
    assert expected in line
    assert not line.startswith("sbatch:")
    assert "\n" not in line


def test_sbatch_error_line_skips_warnings_and_handles_empty():
    stderr = "sbatch: error: Batch job submission failed: Invalid qos specification\nsbatch: warning: extra\n"
    assert sbatch_error_line(stderr) == "Batch job submission failed: Invalid qos specification"
    assert sbatch_error_line("  \n") == "sbatch failed without a message"


def test_parse_job_id_on_recorded_output():
    plain_job, array_job = recorded("sbatch_parsable.txt").splitlines()
    assert (parse_job_id(plain_job), parse_job_id(array_job)) == ("95", "96")
    assert parse_job_id(recorded("sbatch_plain.txt")) == "772"
    assert parse_job_id("Submitted batch job 42\n") == "42"
    assert parse_job_id("1234;cluster2\n") == "1234"
    with pytest.raises(ValueError):
        parse_job_id("")


# --- squeue -----------------------------------------------------------------------

def test_squeue_on_recorded_throttled_array():
    states = parse_squeue(recorded("squeue_array.txt"))
    by_id = {s.job_id: s for s in states}
    assert len(states) == len(by_id) == 40
    assert set(by_id) == {f"11_{i}" for i in range(40)}
    assert {i for i in range(40) if by_id[f"11_{i}"].state == "RUNNING"} == set(range(8))
    assert all(by_id[f"11_{i}"].state == "PENDING" and by_id[f"11_{i}"].reason == "JobArrayTaskLimit"
               for i in range(8, 40))


def test_squeue_compressed_pending_range_expands_to_tasks():
    states = parse_squeue(recorded("squeue_throttled_compressed.txt"))  # 700_[2-9%2] pending
    assert sorted(s.job_id for s in states) == sorted(f"700_{i}" for i in range(10))
    pending = [s for s in states if s.state == "PENDING"]
    assert {s.reason for s in pending} == {"JobArrayTaskLimit"} and len(pending) == 8


@pytest.mark.parametrize(
    "row, ids",
    [
        ("12_[4-9%2]|PENDING|JobArrayTaskLimit", [f"12_{i}" for i in range(4, 10)]),
        ("12_[1,3-5]|PENDING|Priority", ["12_1", "12_3", "12_4", "12_5"]),
        ("12_[0-8:4]|PENDING|Resources", ["12_0", "12_4", "12_8"]),
        ("12|RUNNING|None", ["12"]),
    ],
)
def test_squeue_id_forms(row, ids):
    assert [s.job_id for s in parse_squeue(row)] == ids


def test_days_hours_forms():
    assert parse_slurm_time_min("2-12") == 3600
    assert parse_slurm_time_min("1-01:30") == 24 * 60 + 90


def test_unknown_partition_refusal_names_the_partition():
    line = sbatch_error_line((DATA / "sbatch_err_unknown_partition.txt").read_text())
    assert "nosuch" in line and "Invalid partition name specified" in line and "\n" not in line
