from pathlib import Path

import pytest

from slurmml.errors import SlurmmlError
from slurmml.launcher.plan import (
    Template,
    check_fields,
    check_poll_interval,
    check_request,
    inherited_job_variables,
    job_environment,
    parse_template,
    split_into_arrays,
    submitit_parameters,
    throttle_note,
)
from slurmml.slurm.parse import Partition, parse_sinfo_partitions

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture
def partitions():
    return parse_sinfo_partitions((DATA / "sinfo_partitions.txt").read_text())


# --- split_into_arrays ---------------------------------------------------------

@pytest.mark.parametrize(
    "num_tasks, max_size, counts",
    [(0, 10, []), (1, 10, [1]), (20, 10, [10, 10]), (23, 10, [10, 10, 3]), (5, 1, [1] * 5)],
)
def test_split_into_arrays_counts(num_tasks, max_size, counts):
    assert [c.count for c in split_into_arrays(num_tasks, max_size)] == counts


@pytest.mark.parametrize("num_tasks, max_size", [(1001, 1001), (1002, 1001), (2500, 1001), (7, 3)])
def test_split_into_arrays_covers_every_task_once_below_max_size(num_tasks, max_size):
    chunks = split_into_arrays(num_tasks, max_size)
    # array indices run 0..count-1 and Slurm requires index < MaxArraySize
    assert all(c.count - 1 < max_size for c in chunks)
    covered = [c.offset + i for c in chunks for i in range(c.count)]
    assert covered == list(range(num_tasks))


# --- check_request against the recorded partitions ------------------------------

def test_ok_request_passes(partitions):
    conf = {"partition": "gpu", "gpus_per_node": 4, "cpus_per_task": 8, "tasks_per_node": 4,
            "mem_gb": 15, "nodes": 1, "timeout_min": 600}
    assert check_request(conf, partitions) is None


def test_no_partition_uses_default(partitions):
    assert check_request({"gpus_per_node": 4, "timeout_min": 60}, partitions) is None
    message = check_request({"gpus_per_node": 5, "timeout_min": 60}, partitions)
    assert "partition gpu" in message


def test_unknown_partition_is_named_with_known_ones(partitions):
    message = check_request({"partition": "gpu,bigmem"}, partitions)
    assert "bigmem" in message
    assert "gpu" in message and "cpu" in message


def test_too_many_gpus_says_how_many_there_are(partitions):
    message = check_request({"partition": "gpu", "gpus_per_node": 8}, partitions)
    assert "gpus_per_node=8" in message
    assert "4" in message


def test_gpus_per_task_times_tasks_counts(partitions):
    message = check_request({"partition": "gpu", "gpus_per_task": 2, "tasks_per_node": 4}, partitions)
    assert "gpus_per_node=8" in message


def test_too_many_cpus(partitions):
    message = check_request({"partition": "gpu", "cpus_per_task": 16, "tasks_per_node": 4}, partitions)
    assert "64 CPUs" in message and "32" in message


def test_too_much_memory(partitions):
    message = check_request({"partition": "gpu", "mem_gb": 64}, partitions)
    assert "mem_gb=64" in message and "15 GB" in message


def test_too_many_nodes(partitions):
    message = check_request({"partition": "gpu", "nodes": 3}, partitions)
    assert "nodes=3" in message and "1 node" in message


def test_timeout_over_partition_limit():
    short = Partition("short", True, 32, 16000, 0, 2, 60, True)
    assert check_request({"timeout_min": 60}, [short]) is None
    message = check_request({"timeout_min": 61}, [short])
    assert "timeout_min=61" in message and "60 min" in message


def test_no_partition_facts_means_no_check():
    assert check_request({"gpus_per_node": 99}, []) is None


# --- parse_template ---------------------------------------------------------------

TEMPLATE = """#!/bin/bash
# site template
#SBATCH --qos=high
#SBATCH --mail-type END
#SBATCH --mail_user=me@example.org
module load cuda/12.1
  source /opt/venv/bin/activate
# a comment between setup lines
export OMP_NUM_THREADS=1
"""


def test_parse_template_options_and_setup():
    template = parse_template(TEMPLATE, "site.sh")
    assert template.sbatch_options == {"qos": "high", "mail-type": "END", "mail-user": "me@example.org"}
    assert template.setup == ["module load cuda/12.1", "  source /opt/venv/bin/activate", "export OMP_NUM_THREADS=1"]


def test_parse_template_rejects_short_options_with_location():
    with pytest.raises(SlurmmlError, match=r"site\.sh:3"):
        parse_template("#!/bin/bash\nexport A=1\n#SBATCH -p gpu\n", "site.sh")


# --- submitit_parameters -------------------------------------------------------------

def test_submitit_parameters_prefixes_and_merges():
    template = Template({"qos": "high", "mail-type": "END"}, ["module load cuda"])
    conf = {
        "_target_": "x.Launcher", "submitit_folder": "/tmp/%j", "template": "default", "wait": True,
        "dry_run": False, "poll_interval_s": 10.0, "max_num_timeout": 0, "max_array_size": 100,
        "timeout_min": 30, "gpus_per_node": 2, "nodes": 1, "partition": "gpu", "qos": None,
        "array_parallelism": 8, "additional_parameters": {"mail-type": "FAIL"},
        "setup": ["echo hi"],
    }
    params = submitit_parameters(conf, template)
    assert params == {
        "timeout_min": 30, "gpus_per_node": 2, "nodes": 1,
        "slurm_partition": "gpu", "slurm_array_parallelism": 8,
        "slurm_additional_parameters": {"qos": "high", "mail-type": "FAIL"},
        "slurm_setup": ["module load cuda", "echo hi"],
    }


def test_submitit_parameters_template_options_without_user_additional_parameters():
    params = submitit_parameters({"timeout_min": 5}, Template({"qos": "high"}, []))
    assert params == {"timeout_min": 5, "slurm_additional_parameters": {"qos": "high"}}


# --- environment and polling --------------------------------------------------------

def test_inherited_job_variables():
    names = ["SLURM_CONF", "SLURM_JOB_ID", "SBATCH_PARTITION", "MASTER_ADDR", "SUBMITIT_EXECUTOR",
             "SLURMD_NODENAME", "PATH", "HOME", "MY_SLURM_THING"]
    assert sorted(inherited_job_variables(names)) == sorted(
        ["SLURM_JOB_ID", "SBATCH_PARTITION", "MASTER_ADDR", "SUBMITIT_EXECUTOR", "SLURMD_NODENAME"]
    )
    assert job_environment({name: "1" for name in names}) == {"SLURM_CONF": "1", "PATH": "1", "HOME": "1",
                                                              "MY_SLURM_THING": "1"}


def test_check_poll_interval():
    assert check_poll_interval(5) == 5
    assert check_poll_interval(30.0) == 30.0
    with pytest.raises(SlurmmlError, match="poll_interval_s=4.9"):
        check_poll_interval(4.9)


# --- field values Slurm would read as "no limit" ---------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("timeout_min", -1, "timeout_min=-1 must be at least 1 (Slurm reads 0 or less as no time limit)"),
    ("timeout_min", 0, "timeout_min=0 must be at least 1 (Slurm reads 0 or less as no time limit)"),
    ("mem_gb", 0, "mem_gb=0 must be at least 1 (Slurm reads 0 as all of each node's memory)"),
    ("array_parallelism", 0, "array_parallelism=0 must be at least 1 (Slurm reads %0 as no throttle)"),
    ("max_array_size", 0, "max_array_size=0 must be at least 1"),
    ("cpus_per_task", 0, "cpus_per_task=0 must be at least 1"),
    ("cpus_per_gpu", 0, "cpus_per_gpu=0 must be at least 1"),
    ("tasks_per_node", 0, "tasks_per_node=0 must be at least 1"),
    ("nodes", 0, "nodes=0 must be at least 1"),
    ("gpus_per_node", -1, "gpus_per_node=-1 must not be negative"),
    ("gpus_per_task", -2, "gpus_per_task=-2 must not be negative"),
    ("signal_delay_s", -5, "signal_delay_s=-5 must not be negative"),
    ("max_num_timeout", -1, "max_num_timeout=-1 must not be negative"),
    ("mem_per_cpu", "0", "mem_per_cpu=0 must be more than 0 (Slurm reads 0 as all of each node's memory)"),
    ("mem_per_gpu", "0G", "mem_per_gpu=0G must be more than 0 (Slurm reads 0 as all of each node's memory)"),
    ("gpu_sample_interval_s", 0.0, "gpu_sample_interval_s=0 must be more than 0"),
])
def test_check_fields_refuses_no_limit_values(field, value, message):
    with pytest.raises(SlurmmlError) as raised:
        check_fields({"timeout_min": 60, "nodes": 1, "tasks_per_node": 1, field: value})
    assert str(raised.value) == message


def test_check_fields_accepts_real_requests_and_unset_fields():
    check_fields({"timeout_min": 1, "mem_gb": 4, "array_parallelism": 1, "nodes": 2, "tasks_per_node": None,
                  "cpus_per_task": None, "gpus_per_node": 0, "mem_per_cpu": "512M", "mem_per_gpu": "2G",
                  "max_array_size": None, "signal_delay_s": 0, "gpu_sample_interval_s": 0.5})
    check_fields({"mem_per_cpu": "lots"})  # not a size: sbatch says so itself


# --- the launch message's throttle clause ---------------------------------------------------

@pytest.mark.parametrize("parallelism, sizes, note", [
    (256, [10], ""),  # Slurm runs %10: no throttle to speak of
    (10, [10], ""),
    (8, [50], ", at most 8 at once"),
    (2, [2, 2, 1], ""),
    (1, [2, 2, 1], ", at most 1 at once per array"),
    (None, [5], ""),  # the local launcher's default
    (4, [], ""),
])
def test_throttle_note_says_only_a_real_throttle(parallelism, sizes, note):
    assert throttle_note(parallelism, sizes) == note


def test_gpus_per_task_with_unset_tasks_per_node(partitions):
    assert check_request({"gpus_per_task": 1, "tasks_per_node": None}, partitions) is None


def test_the_warning_is_asked_for_at_most_a_quarter_of_the_time_limit_early():
    from slurmml.launcher.plan import warning_lead_s

    assert warning_lead_s({"timeout_min": 60, "signal_delay_s": 120}) == 120
    assert warning_lead_s({"timeout_min": 1, "signal_delay_s": 120}) == 15  # else every execution is warned at once
    assert warning_lead_s({"timeout_min": 3}) == 45
    assert warning_lead_s({"timeout_min": 1, "signal_delay_s": 0}) == 0
