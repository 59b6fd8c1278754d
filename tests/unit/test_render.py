"""The sbatch script slurmml renders, compared with a saved record (regenerate: SLURMML_RECORD=1)."""

from __future__ import annotations

import pytest

import os
import sys
from dataclasses import asdict
from pathlib import Path

from slurmml.launcher.config import SlurmQueueConf
from slurmml.launcher.plan import ArrayChunk, log_folder, parse_template
from slurmml.launcher.slurm_backend import script_maker

RECORD = Path(__file__).parent.parent / "data" / "rendered_array.sbatch"
HOSTILE = "/tmp/a dir with 'quotes' & $paces"
BATCH_DIR = Path(HOSTILE) / ".slurmml" / "20261123-101500-3f2a" / "batch_0"


def _conf(**overrides):
    conf = asdict(SlurmQueueConf())
    conf.update(name="train", submitit_folder=f"{HOSTILE}/.slurmml/logs", use_srun=True)
    conf.update(overrides)
    return conf


def test_rendered_array_matches_the_record() -> None:
    template = parse_template("#SBATCH --qos=high\nmodule load cuda\n", "site.sh")
    conf = _conf(gpus_per_node=2, partition="gpu", mem_gb=8, array_parallelism=4, setup=["echo hi"],
                 additional_parameters={"mail-type": "END"})
    text = script_maker(conf, template).render(BATCH_DIR, ArrayChunk(offset=0, count=10)).replace(sys.executable, "PYTHON")
    if os.environ.get("SLURMML_RECORD") == "1":
        RECORD.write_text(text)
    assert text == RECORD.read_text()


def test_second_array_starts_at_its_offset() -> None:
    text = script_maker(_conf(), parse_template("", "t")).render(BATCH_DIR, ArrayChunk(offset=10001, count=5))
    assert "#SBATCH --array=0-4%5" in text
    assert text.rstrip().endswith("--offset 10001")


def test_single_task_is_not_an_array_and_paths_are_quoted() -> None:
    text = script_maker(_conf(), parse_template("", "t")).render(BATCH_DIR, ArrayChunk(offset=3, count=1))
    assert "--array" not in text
    assert "'/tmp/a dir with '\"'\"'quotes'\"'\"' & $paces/.slurmml/20261123-101500-3f2a/batch_0'" in text


def test_without_srun_the_task_is_the_batch_script_and_gets_the_signal() -> None:
    text = script_maker(_conf(use_srun=False, signal_delay_s=90), parse_template("", "t")).render(
        BATCH_DIR, ArrayChunk(offset=0, count=2))
    assert "srun" not in text
    assert "#SBATCH --signal=B:USR2@90" in text
    assert f"exec {sys.executable} -u -m slurmml.launcher.task" in text


def test_log_folder_drops_per_job_components() -> None:
    assert log_folder("/s/.submitit/%j") == "/s/.submitit"  # hydra-submitit-launcher's default
    assert log_folder("/s/.slurmml/logs") == "/s/.slurmml/logs"


def test_srun_only_for_jobs_of_several_tasks() -> None:
    assert script_maker({**_conf(), "use_srun": None}, parse_template("", "t")).use_srun is False
    assert script_maker({**_conf(), "use_srun": None, "tasks_per_node": 2}, parse_template("", "t")).use_srun is True


def test_python_field_starts_the_task_as_written() -> None:
    maker = script_maker(_conf(python="singularity exec 'my image.sif' python3"), parse_template("", "t"))
    text = maker.render(BATCH_DIR, ArrayChunk(offset=0, count=2))
    assert "singularity exec 'my image.sif' python3 -u -m slurmml.launcher.task '/tmp/a dir with" in text
    assert sys.executable not in text


def test_unset_tasks_per_node_renders_no_ntasks_per_node() -> None:
    assert "--ntasks-per-node=1" in script_maker(_conf(), parse_template("", "t")).render(BATCH_DIR, ArrayChunk(0, 2))
    maker = script_maker(_conf(tasks_per_node=None, use_srun=None), parse_template("", "t"))
    assert "--ntasks-per-node" not in maker.render(BATCH_DIR, ArrayChunk(offset=0, count=2))
    assert maker.use_srun is False  # one task per node, one node


def test_schema_takes_the_peers_python_and_null_tasks_per_node() -> None:
    from omegaconf import OmegaConf

    conf = OmegaConf.structured(SlurmQueueConf)
    conf.tasks_per_node = None
    conf.python = "apptainer exec img.sif python"
    assert conf.tasks_per_node is None and conf.python == "apptainer exec img.sif python"


def test_every_field_of_the_peers_slurm_config_keeps_its_name_and_default() -> None:
    """The installed hydra-submitit-launcher's fields, plus those of its main branch (`python`, `tasks_per_node=null`)."""
    from dataclasses import MISSING, fields

    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf as PeerConf

    ours = {f.name: f for f in fields(SlurmQueueConf)}
    for peer in fields(PeerConf):
        if peer.name in {"_target_", "submitit_folder"}:  # the plugin's class and its log folder are slurmml's
            continue
        assert peer.name in ours, peer.name
        if peer.default is not MISSING:
            assert ours[peer.name].default == peer.default, peer.name
    assert ours["python"].default is None


def test_torchrun_mode_runs_one_task_per_node_that_forwards_the_warning() -> None:
    maker = script_maker({**_conf(), "use_srun": None, "nodes": 2, "nproc_per_node": 4, "timeout_min": 60},
                         parse_template("", "t"))
    text = maker.render(BATCH_DIR, ArrayChunk(0, 1))
    assert maker.use_srun and "--ntasks-per-node=1" in text and "--nodes=2" in text
    (launch,) = [line for line in text.splitlines() if line.startswith("srun")]
    assert "-m torch.distributed.run" in launch and "--nproc-per-node=4" in launch
    assert "trap '\"'\"''\"'\"' USR2; exec" in launch and "--shutdown-timeout=120" in launch  # torchrun ignores the warning
    assert "--signals-to-handle" not in launch
    assert "-m slurmml.launcher.task" in launch and " -u " not in launch.split("torch.distributed.run")[1]
    assert "#SBATCH --signal=USR2@120" in text  # to the job step, torchrun, which forwards it


def test_torchrun_mode_with_several_tasks_per_node_is_refused() -> None:
    from slurmml.errors import SlurmmlError
    from slurmml.launcher.plan import check_fields

    with pytest.raises(SlurmmlError, match="leave tasks_per_node at 1"):
        check_fields({"nproc_per_node": 2, "tasks_per_node": 2})
