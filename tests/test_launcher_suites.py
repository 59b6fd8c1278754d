"""Hydra's own launcher conformance suites, the way Hydra's launcher plugins test themselves.

`slurmml` runs them against the real dev cluster (wait=true so results come back);
`slurmml_local` runs them on this machine.
"""

from __future__ import annotations

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite

from hydra_plugins.slurmml_launcher.slurmml_launcher import SlurmmlLauncher, SlurmmlLocalLauncher

SLURM_FLAGS = ["hydra.launcher.wait=true", "hydra.launcher.poll_interval_s=5", "hydra.launcher.timeout_min=5"]
SLURM_CFG = {"wait": True, "poll_interval_s": 5, "timeout_min": 5}


def test_discovery() -> None:
    names = [cls.__name__ for cls in Plugins.instance().discover(Launcher)]
    assert SlurmmlLauncher.__name__ in names and SlurmmlLocalLauncher.__name__ in names


@pytest.mark.parametrize("launcher_name, overrides", [("slurmml_local", ["hydra.launcher.array_parallelism=2"])])
class TestLocalLauncher(LauncherTestSuite):
    pass


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
@pytest.mark.parametrize("launcher_name, overrides", [("slurmml", SLURM_FLAGS)])
class TestSlurmLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({"defaults": [{"override hydra/launcher": "slurmml_local"}, "_self_"]}, ["-m"])],
)
class TestLocalLauncherIntegration(IntegrationTestSuite):
    pass


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({"defaults": [{"override hydra/launcher": "slurmml"}, "_self_"], "hydra": {"launcher": SLURM_CFG}}, ["-m"])],
)
class TestSlurmLauncherIntegration(IntegrationTestSuite):
    pass
