"""Hydra discovers plugins by importing this module: keep it tiny, import the work lazily."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.utils import JobReturn
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from slurmml.launcher.config import register_configs

register_configs()


class LaunchError(CompactHydraException):
    """Hydra prints these as one line, without a traceback."""


class SlurmmlSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="slurmml", path="pkg://slurmml.hydra_conf")


class _SlurmmlLauncherBase(Launcher):
    def __init__(self, **params: Any) -> None:
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in params.items()}
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from slurmml.errors import SlurmmlError

        assert self.config is not None and len(job_overrides) > 0
        try:
            return self._launch(job_overrides, initial_job_idx)
        except SlurmmlError as error:
            raise LaunchError(f"slurmml: {error}") from None

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        raise NotImplementedError


class SlurmmlLauncher(_SlurmmlLauncherBase):
    """hydra/launcher=slurmml: one job array per batch on Slurm."""

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from slurmml.launcher.sweep import launch_on_slurm

        return launch_on_slurm(self, self.params, job_overrides, initial_job_idx)


class SlurmmlLocalLauncher(_SlurmmlLauncherBase):
    """hydra/launcher=slurmml_local: the same sweep on this machine."""

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from slurmml.launcher.sweep import launch_locally

        return launch_locally(self, self.params, job_overrides, initial_job_idx)
