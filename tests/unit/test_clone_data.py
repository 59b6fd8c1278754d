"""A clone's dataset changes and a synced run's script: the pure parts of `slurmml clone RUN NAME@VERSION`."""

from __future__ import annotations

import pytest

from slurmml.errors import SlurmmlError
from slurmml.launcher.overrides import dataset_changes
from slurmml.launcher.script_runs import launcher_settings, script_in, script_overrides


def test_a_bare_dataset_version_replaces_every_value_naming_that_dataset() -> None:
    values = {"data.train": "spiral@v1", "data.eval": "spiral", "model.name": "mlp", "seed": 3}
    assert dataset_changes(["spiral@v2", "optimizer.lr=0.1"], values) == [
        "data.eval=spiral@v2", "data.train=spiral@v2", "optimizer.lr=0.1"]


def test_a_dataset_no_config_value_names_is_one_line_naming_the_fix() -> None:
    with pytest.raises(SlurmmlError, match=r"names dataset 'digits'.*KEY=digits@v3"):
        dataset_changes(["digits@v3"], {"data": "spiral@v1"})


def test_overrides_with_an_at_sign_are_left_alone() -> None:
    assert dataset_changes(["user=a@b", "+tag=x"], {}) == ["user=a@b", "+tag=x"]


def test_a_synced_runs_command_line_gives_its_overrides_and_script() -> None:
    assert script_overrides(["train.py", "-m", "lr=0.1", "--flag", "dataset=spiral@v1"]) == ["lr=0.1", "dataset=spiral@v1"]
    assert script_in({}, "train.py") == "train.py"
    meta = {"git": {"script": "examples/train.py", "cwd": ""}}
    assert script_in(meta, "/home/me/repo/examples/train.py") == "examples/train.py"
    assert script_in({"git": {"script": "examples/train.py", "cwd": "examples"}}, "/r/examples/train.py") == "train.py"


def test_launcher_changes_become_launcher_fields() -> None:
    assert launcher_settings(["lr=1", "hydra.launcher.partition=cpu", "hydra.launcher.timeout_min=5"]) == {
        "partition": "cpu", "timeout_min": 5}


def test_override_values_read_keys_without_their_prefixes() -> None:
    from slurmml.launcher.overrides import override_values

    assert override_values(["+data=spiral@v1", "++lr=0.1", "~seed", "-m", "x=a=b"]) == {
        "data": "spiral@v1", "lr": "0.1", "x": "a=b"}
