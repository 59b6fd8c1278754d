"""The sbatch script slurmml renders, compared with a saved record (regenerate: SLURMML_RECORD=1)."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from slurmml.launcher.config import SlurmQueueConf
from slurmml.launcher.plan import ArrayChunk, parse_template
from slurmml.launcher.slurm_backend import make_executor, render_script

RECORD = Path(__file__).parent.parent / "data" / "rendered_array.sbatch"
HOSTILE = "/tmp/a dir with 'quotes' & $paces"


def _conf(**overrides):
    conf = asdict(SlurmQueueConf())
    conf.update(name="train", submitit_folder=f"{HOSTILE}/.slurmml/submitit/%j", **overrides)
    return conf


def test_rendered_array_matches_the_record() -> None:
    template = parse_template("#SBATCH --qos=high\nmodule load cuda\n", "site.sh")
    conf = _conf(gpus_per_node=2, partition="gpu", mem_gb=8, array_parallelism=4, setup=["echo hi"],
                 additional_parameters={"mail-type": "END"})
    text = render_script(make_executor(conf, template), ArrayChunk(offset=0, count=10))
    text = text.replace(os.path.realpath(os.sys.executable), "PYTHON").replace(os.sys.executable, "PYTHON")
    if os.environ.get("SLURMML_RECORD") == "1":
        RECORD.write_text(text)
    assert text == RECORD.read_text()


def test_single_task_is_not_an_array_and_paths_are_quoted() -> None:
    text = render_script(make_executor(_conf(), parse_template("", "t")), ArrayChunk(offset=3, count=1))
    assert "--array" not in text
    assert "'/tmp/a dir with '\"'\"'quotes'\"'\"' & $paces/.slurmml/submitit/%j'" in text  # shell-quoted for srun
