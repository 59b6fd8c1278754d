"""The TUI's data source: a registry read never waits behind a Slurm call (no Textual here, threads only).

The poller's squeue is a fake that hangs until the test lets it answer; meanwhile every read the views make,
from another thread, must finish. With one lock held around the whole refresh, each of them waited up to
squeue's 30 s timeout.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from slurmml.poller.loop import Poller
from slurmml.registry.registry import Registry
from slurmml.tui.source import RefreshOutcome, RegistrySource
from tests.tui.conftest import FIXED, RUNNING_RUN, SWEEP_A, HangingSlurm

READ_WITHIN_S = 10.0  # a deadline for a read that takes milliseconds, far below squeue's 30 s timeout


def finishes(read: Callable[[], Any]) -> Any:
    """read(), run in another thread; fails if it has not returned within READ_WITHIN_S."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(read()), daemon=True)
    thread.start()
    thread.join(READ_WITHIN_S)
    assert not thread.is_alive(), "a registry read waited for the Slurm call"
    return result[0]


READS: dict[str, Callable[[RegistrySource], Any]] = {
    "snapshot": lambda source: len(source.snapshot().rows),
    "matching_ids": lambda source: len(source.matching_ids(("val_acc>0.5",))),
    "run_detail": lambda source: source.run_detail(RUNNING_RUN)["id"],
    "curves": lambda source: sorted(source.curves([RUNNING_RUN], ["loss"])),
    "leaderboard": lambda source: len(source.leaderboard("val_acc", None, SWEEP_A, None)[1]),
    "metric_names": lambda source: source.metric_names(),
}


@pytest.mark.parametrize("read", sorted(READS))
def test_a_read_finishes_while_the_pollers_squeue_hangs(fixed_registry: Path, read: str) -> None:
    slurm = HangingSlurm()
    poller = Poller(Registry(fixed_registry), run=slurm, clock=lambda: FIXED, warn=lambda message: None)
    source = RegistrySource(Registry(fixed_registry), poller=poller, local_runs_dir=None, clock=lambda: FIXED)
    answer = READS[read](source)  # with nothing else going on
    assert answer
    outcomes: list[RefreshOutcome] = []
    refresh = threading.Thread(target=lambda: outcomes.append(source.refresh()), daemon=True)
    refresh.start()
    try:
        assert slurm.asked.wait(30), "the refresh never asked Slurm"
        assert finishes(lambda: READS[read](source)) == answer
    finally:
        slurm.answer.set()
        refresh.join(60)
    assert slurm.calls[0] == "squeue"
    assert any("squeue exited 1: squeue: error: slurmctld is busy" in p for p in outcomes[0].problems)


def test_the_poller_may_not_share_the_views_connection(fixed_registry: Path) -> None:
    registry = Registry(fixed_registry)
    with pytest.raises(ValueError, match="its own registry connection"):
        RegistrySource(registry, poller=Poller(registry, warn=lambda message: None))


def test_close_closes_both_connections_and_may_be_called_twice(fixed_registry: Path) -> None:
    source = RegistrySource.open(fixed_registry)
    views, updates = source.registry.conn, source.poller.registry.conn
    source.close()
    source.close()
    for conn in (views, updates):
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")


def test_open_closes_the_first_connection_when_the_second_fails(fixed_registry: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import slurmml.registry.registry as registry_module

    opened: list[Registry] = []

    class SecondFails(Registry):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if opened:
                raise OSError("no second connection")
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(registry_module, "Registry", SecondFails)
    with pytest.raises(OSError, match="no second connection"):
        RegistrySource.open(fixed_registry)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].conn.execute("SELECT 1")
