"""A sweeper for tests: Hydra's basic sweeper, declaring the direction of its objective as Optuna's does."""

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class DeclaringSweeper(BasicSweeper):
    def __init__(self, max_batch_size=None, params=None, direction="minimize") -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.direction = direction
