"""BatchWaiter on fake time: result files appear, and a stand-in for the poller settles runs in a real registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from slurmml.launcher import batch
from slurmml.launcher.waiting import RESULT_GRACE_S, BatchWaiter
from slurmml.registry.registry import Registry

RUN_IDS = [f"s1-{i}" for i in range(4)]


class FakeWorld:
    """Fake time; result files appear and runs end (as the poller would record them) at given times."""

    def __init__(self, batch_dir: Path, registry: Registry, results_at=None, ends_at=None) -> None:
        self.batch_dir, self.registry, self.now, self.polls = batch_dir, registry, 0.0, 0
        self.results_at = dict(results_at or {})  # index -> time its result file appears
        self.ends_at = dict(ends_at or {})  # index -> (time, state, reason) the poller settles it

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for index, at in list(self.results_at.items()):
            if self.now >= at:
                batch.write_atomic(batch.result_path(self.batch_dir, index), b"result")
                del self.results_at[index]

    def poll(self) -> None:  # the waiter's only way to Slurm
        self.polls += 1
        for index, (at, state, reason) in list(self.ends_at.items()):
            if self.now >= at:
                self.registry.mark_final({RUN_IDS[index]: (state, reason)}, source="sacct")
                del self.ends_at[index]


def setup(tmp_path: Path, **world) -> tuple[BatchWaiter, FakeWorld]:
    registry = Registry(tmp_path / "registry.db")
    registry.add_sweep({"id": "s1", "created": 0.0}, [{"id": r, "job_num": i} for i, r in enumerate(RUN_IDS)])
    registry.mark_queued({r: (f"700_{i}", "") for i, r in enumerate(RUN_IDS)})
    fake = FakeWorld(tmp_path / "batch", registry, **world)
    return BatchWaiter(fake.batch_dir, registry, RUN_IDS, fake, clock=fake.clock, sleep=fake.sleep), fake


def test_results_end_the_wait(tmp_path: Path) -> None:
    waiter, fake = setup(tmp_path, results_at={0: 1.0, 1: 2.0, 2: 2.0, 3: 5.0})
    progress = []
    assert waiter.wait(on_progress=lambda done, lost: progress.append(done)) == {}
    assert progress[0] == 0 and progress[-1] == 4 and 5.0 <= fake.now < 6.0


def test_a_task_that_ended_without_its_result_is_lost_with_slurms_word(tmp_path: Path) -> None:
    waiter, fake = setup(tmp_path, results_at={0: 1.0, 1: 1.0, 2: 1.0},
                         ends_at={3: (3.0, "OUT_OF_MEMORY", "Slurm: OUT_OF_MEMORY (exceeded memory limit)")})
    lost = waiter.wait()
    assert list(lost) == [3]
    assert lost[3] == "Slurm job 700_3 ended OUT_OF_MEMORY without a result: Slurm: OUT_OF_MEMORY (exceeded memory limit)"
    assert fake.now < 4.0


def test_a_failed_task_with_its_result_is_not_lost(tmp_path: Path) -> None:
    waiter, _ = setup(tmp_path, results_at={0: 1.0, 1: 1.0, 2: 1.0, 3: 2.5}, ends_at={3: (2.0, "FAILED", "exit 1")})
    assert waiter.wait() == {}  # the result (the raised exception) lands just after Slurm's FAILED


@pytest.mark.parametrize("state", ["COMPLETED", "FAILED"])
def test_an_end_that_writes_a_result_gets_a_grace_for_the_filesystem(tmp_path: Path, state: str) -> None:
    waiter, fake = setup(tmp_path, results_at={0: 1.0, 1: 1.0, 2: 1.0}, ends_at={3: (2.0, state, "")})
    lost = waiter.wait()
    assert list(lost) == [3] and f"ended {state} without a result" in lost[3]
    assert 2.0 + RESULT_GRACE_S <= fake.now < 2.0 + RESULT_GRACE_S + 2


def test_completed_result_arriving_within_the_grace_is_kept(tmp_path: Path) -> None:
    waiter, _ = setup(tmp_path, results_at={0: 1.0, 1: 1.0, 2: 1.0, 3: 30.0}, ends_at={3: (2.0, "COMPLETED", "")})
    assert waiter.wait() == {}


def test_the_waiter_asks_the_poller_every_round_and_slurm_never_directly(tmp_path: Path) -> None:
    waiter, fake = setup(tmp_path, results_at={i: 10.0 for i in range(4)})
    waiter.wait()
    assert fake.polls == 20  # one poll() per half-second round; the poller's own schedule limits Slurm calls
