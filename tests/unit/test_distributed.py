"""The rendezvous variables torch.distributed gets from a Slurm step, and the first host of a host list."""

from __future__ import annotations

import pytest

from slurmml.core.distributed import first_host, master_port, torch_environment
from slurmml.tracking.distributed import export_torch_environment


def step(procid: int, localid: int, tasks: int, per_node: str, nodelist: str = "vm", job_id: str = "4242") -> dict[str, str]:
    """What srun gives one task of a step (SLURM_NTASKS is in the batch script too: it must not count)."""
    return {"SLURM_PROCID": str(procid), "SLURM_LOCALID": str(localid), "SLURM_NTASKS": str(tasks),
            "SLURM_STEP_NUM_TASKS": str(tasks), "SLURM_STEP_TASKS_PER_NODE": per_node,
            "SLURM_JOB_NODELIST": nodelist, "SLURM_JOB_ID": job_id, "CUDA_VISIBLE_DEVICES": "2"}


def test_a_single_process_gets_nothing() -> None:
    assert torch_environment(step(0, 0, 1, "1"), "vm") == {}
    batch_script = {k: v for k, v in step(0, 0, 2, "2").items() if not k.startswith("SLURM_STEP_")}
    assert torch_environment(batch_script, "vm") == {}  # the job has 2 tasks, but the batch script is one process
    assert torch_environment({}, None) == {}


def test_two_tasks_on_one_node() -> None:
    envs = [torch_environment(step(rank, rank, 2, "2"), "vm") for rank in (0, 1)]
    assert envs[1] == {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                       "MASTER_ADDR": "vm", "MASTER_PORT": str(20000 + 4242)}
    assert {k: v for k, v in envs[0].items() if "RANK" not in k} == {k: v for k, v in envs[1].items() if "RANK" not in k}


def test_two_nodes_with_two_tasks_each() -> None:
    envs = [torch_environment(step(rank, rank % 2, 4, "2(x2)", "n[1-2]", "123456"), first_host("n[1-2]"))
            for rank in range(4)]
    assert [(e["RANK"], e["LOCAL_RANK"]) for e in envs] == [("0", "0"), ("1", "1"), ("2", "0"), ("3", "1")]
    assert {(e["WORLD_SIZE"], e["LOCAL_WORLD_SIZE"], e["MASTER_ADDR"], e["MASTER_PORT"]) for e in envs} == \
        {("4", "2", "n1", str(20000 + 3456))}


def test_uneven_tasks_per_node_leave_the_local_world_size_out() -> None:
    assert "LOCAL_WORLD_SIZE" not in torch_environment(step(0, 0, 5, "3,2"), "vm")


@pytest.mark.parametrize("job_id", [0, 1, 9999, 10000, 32767, 123456789])
def test_the_port_is_below_the_ephemeral_range(job_id: int) -> None:
    assert 20000 <= master_port(job_id) < 30000 < 32768


def test_without_a_host_or_a_job_id_those_are_left_out() -> None:
    env = torch_environment(step(0, 0, 2, "2", job_id=""), None)
    assert "MASTER_ADDR" not in env and "MASTER_PORT" not in env and env["WORLD_SIZE"] == "2"


@pytest.mark.parametrize("nodelist, host", [
    ("vm", "vm"), ("n[1-2]", "n1"), ("n1,n3", "n1"), ("gpu[01-04,07]", "gpu01"), ("gpu[07,01-04]", "gpu07"),
    ("a[3-4],b[1-2]", "a3"), ("rack[1-2]-node[01-08]", "rack1-node01"), ("node-7.cluster", "node-7.cluster"),
    (" vm ", "vm"),
])
def test_first_host(nodelist: str, host: str) -> None:
    assert first_host(nodelist) == host


@pytest.mark.parametrize("nodelist", ["", "n[1-2", "n]1[", "n[[1]]", "n[a-b]", "n[]", "n[1-]", "bad host"])
def test_forms_the_parser_does_not_read_are_none(nodelist: str) -> None:
    assert first_host(nodelist) is None


def test_values_already_set_are_kept() -> None:
    torchrun = {**step(0, 0, 2, "2"), "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_PORT": "29500"}
    assert torch_environment(torchrun, "vm") == {"LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "vm"}


def test_export_sets_only_what_is_missing_and_never_cuda_visible_devices() -> None:
    environ = {**step(1, 1, 2, "2", nodelist="gpu[01-04,07]"), "MASTER_PORT": "29500"}
    before = dict(environ)
    assert export_torch_environment(environ) == {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2",
                                                 "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "gpu01"}
    assert environ == {**before, "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                       "MASTER_ADDR": "gpu01"}
    assert environ["CUDA_VISIBLE_DEVICES"] == "2" and environ["MASTER_PORT"] == "29500"
    assert export_torch_environment(environ) == {}  # a second call finds everything set


def test_export_outside_a_step_touches_nothing() -> None:
    environ = {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "vm"}
    assert export_torch_environment(environ) == {} and environ == {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "vm"}


def test_a_host_list_the_parser_cannot_read_is_expanded_by_scontrol(monkeypatch: pytest.MonkeyPatch) -> None:
    from slurmml.slurm import commands

    asked = []

    def scontrol(argv, **kwargs):
        asked.append(list(argv))
        return commands.CommandResult(tuple(argv), 0, "odd-a\nodd-b\n", "")

    monkeypatch.setattr(commands, "run_command", scontrol)
    environ = step(0, 0, 2, "2", nodelist="odd[x]")
    assert export_torch_environment(environ)["MASTER_ADDR"] == "odd-a"
    assert asked == [["scontrol", "show", "hostnames", "odd[x]"]]
    assert export_torch_environment(step(0, 0, 2, "2", nodelist="n[1-2]"))["MASTER_ADDR"] == "n1" and len(asked) == 1


def test_a_single_process_joins_a_group_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    import torch.distributed as dist

    from slurmml.tracking.distributed import init_distributed

    for name in ("SLURM_STEP_NUM_TASKS", "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    try:
        assert init_distributed("gloo") == (0, 1)
        value = torch.tensor([5.0])
        dist.all_reduce(value)
        assert value.item() == 5.0 and init_distributed() == (0, 1)  # a second call keeps the group
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
