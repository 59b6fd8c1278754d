"""Which way is better (slurmml.core.direction), what a sweeper declares, and which return values are a run's result."""

from __future__ import annotations

import enum
from pathlib import Path

import numpy
import pytest
import torch

from slurmml.launcher.recording import sweeper_direction
from slurmml.launcher.task import numeric_result
from slurmml.core.direction import declared_direction, metric_mode, name_direction, shared_direction

APPS = Path(__file__).resolve().parent.parent / "apps"


@pytest.mark.parametrize("name, mode", [
    ("loss", "min"), ("val_loss", "min"), ("train/Loss", "min"), ("error_rate", "min"), ("val_mse", "min"),
    ("perplexity", "min"), ("step_time", "min"), ("wer", "min"), ("valLoss", "min"), ("top1_err", "min"),
    ("nll", "min"), ("latency_ms", "min"), ("trainloss", "min"),
    ("acc", "max"), ("val_acc", "max"), ("accuracy", "max"), ("score", "max"), ("f1", "max"), ("val/acc1", "max"),
    ("episode_return", "max"),
    ("lr", "max"), ("objective", "max"),  # says nothing: the larger
    ("power_w", "max"), ("answer_acc", "max"),  # 'wer' inside a word is not a word error rate
])
def test_the_name_rule(name: str, mode: str) -> None:
    assert metric_mode(name) == mode


def test_an_explicit_mode_wins_then_the_declared_direction_then_the_name() -> None:
    assert metric_mode("result", "min", mode="max") == "max"
    assert metric_mode("val_loss", "min", mode="max") == "max"
    # the declared direction is the objective's: always the result's
    assert metric_mode("result", "max") == "max" and metric_mode("result", "min") == "min"
    assert metric_mode("result") == "min"  # undeclared: minimized, as Optuna, Ax and Nevergrad do by default
    # a named metric's own name speaks first; the declaration fills in only where the name says nothing
    assert metric_mode("val_acc", "min") == "max" and metric_mode("loss", "max") == "min"
    assert metric_mode("objective", "min") == "min" and metric_mode("objective", "max") == "max"
    assert name_direction("objective") is None


class Direction(enum.Enum):  # the Optuna sweeper's structured config holds its direction as such an enum
    minimize = 1
    maximize = 2


@pytest.mark.parametrize("sweeper, direction", [
    ({"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "direction": "minimize"}, "min"),
    ({"direction": "maximize", "n_trials": 20}, "max"),
    ({"direction": Direction.minimize}, "min"),
    ({"direction": ["maximize", "minimize"]}, "max"),  # multi-objective: the first objective
    ({"direction": []}, None),
    ({"ax_config": {"experiment": {"minimize": True}}}, "min"),
    ({"ax_config": {"experiment": {"minimize": False}}}, "max"),
    ({"optim": {"optimizer": "OnePlusOne", "maximize": False}}, "min"),
    ({"optim": {"maximize": True}}, "max"),
    ({"max_batch_size": None, "params": None}, None),  # Hydra's basic sweeper optimizes nothing
])
def test_declared_direction(sweeper: dict, direction: str | None) -> None:
    assert declared_direction(sweeper) == direction


def test_the_direction_of_a_composed_hydra_config() -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(APPS), version_base="1.3"):
        config = compose("tiny", return_hydra_config=True)
    assert sweeper_direction(config) is None  # the basic sweeper
    with open_dict(config):
        config.hydra.sweeper = {"direction": ["minimize", "maximize"], "n_trials": "${hydra.job.num}"}
    assert sweeper_direction(config) == "min"  # an interpolation that cannot be resolved here is read as written


def test_shared_direction() -> None:
    assert shared_direction(["min", None, "min"]) == "min"
    assert shared_direction(["min", "max"]) is None and shared_direction([None]) is None and shared_direction([]) is None


@pytest.mark.parametrize("value, result", [
    (3, 3.0), (0.25, 0.25), (numpy.float32(0.5), 0.5), (numpy.int64(7), 7.0), (numpy.float64(1.5), 1.5),
    (torch.tensor(0.125), 0.125), (torch.tensor(2), 2.0),
    (True, None), (numpy.bool_(True), None), (torch.tensor(True), None),
    ({"loss": 0.1}, None), ([0.1, 0.2], None), ((0.1,), None), ("0.1", None), (None, None),
    (torch.tensor([0.5]), None), (numpy.array([1.0, 2.0]), None), (10 ** 400, None),
])
def test_which_return_values_are_a_result(value, result) -> None:
    assert numeric_result(value) == result


def test_the_default_metric_is_the_result_only_where_its_direction_is_known() -> None:
    from slurmml.core.direction import default_metric

    logged = {"loss": 6, "val_acc": 6, "train_acc": 2}
    assert default_metric(logged, has_result=True, declared="min") == "result"  # an optimizing sweeper's objective
    assert default_metric(logged, has_result=True, declared=None) == "val_acc"  # a basic sweep returning something
    assert default_metric({}, has_result=True, declared=None) == "result"  # nothing else to rank by
    assert default_metric(logged, has_result=False, declared="max") == "val_acc"
    assert default_metric({"loss": 6, "val_loss": 2}, has_result=False, declared=None) == "val_loss"
    assert default_metric({}, has_result=False, declared=None) is None
