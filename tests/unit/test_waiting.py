"""BatchWaiter on fake time, with squeue/sacct answers built from recorded output (tests/unit/data)."""

from pathlib import Path

import pytest

from slurmml.launcher import batch
from slurmml.launcher.slurm_backend import ArraySubmission
from slurmml.launcher.waiting import RESULT_GRACE_S, BatchWaiter
from slurmml.slurm.commands import CommandResult

DATA = Path(__file__).parent / "data"
POLL_S = 10.0
SOCKET_TIMEOUT = "slurm_load_jobs error: Socket timed out on send/recv operation\n"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


class FakeSlurm:
    """Fake time plus a `run` that answers squeue and sacct; result files appear at given times."""

    def __init__(self, batch_dir, squeue, sacct="", results_at=None):
        self.batch_dir = batch_dir
        self.now = 0.0
        self.squeue = squeue  # (now) -> CommandResult fields (rc, stdout, stderr)
        self.sacct = sacct
        self.results_at = dict(results_at or {})  # index -> time its result file appears
        self.calls: list[tuple[str, float]] = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        for index, at in list(self.results_at.items()):
            if self.now >= at:
                batch.write_atomic(batch.result_path(self.batch_dir, index), b"result")
                del self.results_at[index]
        if self.now > 3600:
            raise AssertionError("the waiter did not return within an hour of fake time")

    def run(self, argv):
        self.calls.append((argv[0], self.now))
        if argv[0] == "squeue":
            rc, out, err = self.squeue(self.now)
        elif argv[0] == "sacct":
            rc, out, err = 0, self.sacct, ""
        else:
            raise AssertionError(f"unexpected command {argv}")
        return CommandResult(tuple(argv), rc, out, err)

    def times(self, program):
        return [t for name, t in self.calls if name == program]


def submissions(*arrays):
    """(job_id, count) pairs, laid out one after the other in the batch."""
    subs, offset = [], 0
    for job_id, count in arrays:
        subs.append(ArraySubmission(job_id, offset, count, f"array_{len(subs)}.sbatch", "/logs/%j"))
        offset += count
    return subs


def squeue_without_finished(batch_dir, text):
    """The recorded squeue rows, minus the tasks whose result file exists (they have left the queue)."""
    def answer(now):
        done = batch.finished_indices(batch_dir)
        rows = [r for r in text.splitlines() if int(r.split("|")[0].split("_")[1]) not in done]
        return 0, "\n".join(rows) + "\n", ""
    return answer


def make_waiter(tmp_path, fake, subs):
    num_tasks = sum(s.count for s in subs)
    return BatchWaiter(tmp_path, subs, num_tasks, POLL_S, run=fake.run, clock=fake.clock, sleep=fake.sleep)


def test_results_appear_one_squeue_per_poll_interval(tmp_path):
    fake = FakeSlurm(tmp_path, None, results_at={i: 4.0 + 6 * i for i in range(10)})  # last one at 58 s
    fake.squeue = squeue_without_finished(tmp_path, recorded("squeue_throttled_array.txt"))
    progress = []
    lost = make_waiter(tmp_path, fake, submissions(("700", 10))).wait(lambda done, n_lost: progress.append(done))

    assert lost == {}
    squeue_times = fake.times("squeue")
    assert 1 <= len(squeue_times) <= fake.now // POLL_S
    assert all(b - a >= POLL_S for a, b in zip(squeue_times, squeue_times[1:]))
    assert fake.times("sacct") == []  # every task still queued or finished: no need to ask sacct
    assert progress == sorted(progress) and progress[-1] == 10


@pytest.mark.parametrize("state_line, expected", [
    ("701|FAILED|1:0", "FAILED (exit=1:0)"),
    ("701|OUT_OF_MEMORY|0:125", "OUT_OF_MEMORY (exit=0:125)"),
])
def test_task_gone_from_queue_without_result_is_lost_with_sacct_state(tmp_path, state_line, expected):
    # 11 tasks with MaxArraySize 10: array 700 (tasks 0-9, all finished) and the single job 701 (task 10)
    sacct = recorded("sacct_states.txt").replace("701|FAILED|1:0", state_line)
    fake = FakeSlurm(tmp_path, lambda now: (0, "", ""), sacct=sacct, results_at={i: 1.0 for i in range(10)})
    lost = make_waiter(tmp_path, fake, submissions(("700", 10), ("701", 1))).wait()

    assert list(lost) == [10]
    assert "Slurm job 701 " in lost[10] and expected in lost[10]
    assert fake.now < 2 * POLL_S  # reported at the first squeue, no waiting for a grace period


def test_cancelled_array_tasks_are_lost(tmp_path):
    fake = FakeSlurm(tmp_path, lambda now: (0, "", ""), sacct=recorded("sacct_states.txt"))
    lost = make_waiter(tmp_path, fake, submissions(("703", 3))).wait()
    assert sorted(lost) == [0, 1, 2]
    assert "Slurm job 703_1 ended CANCELLED (by 0 exit=0:0)" in lost[1]


def test_purged_jobs_invalid_job_id_goes_to_sacct(tmp_path):
    # squeue exits 1 with "Invalid job id specified" once every listed job is purged: not a failure
    invalid = recorded("squeue_err_invalid_job_id.txt")
    fake = FakeSlurm(tmp_path, lambda now: (1, "", invalid), sacct=recorded("sacct_states.txt"))
    lost = make_waiter(tmp_path, fake, submissions(("701", 1))).wait()
    assert "Slurm job 701 ended FAILED" in lost[0]
    assert len(fake.times("squeue")) == 1 and len(fake.times("sacct")) == 1


def test_completed_without_result_waits_for_grace_period(tmp_path):
    # all of array 700 left the queue; sacct says COMPLETED, but task 5's result is not visible
    fake = FakeSlurm(tmp_path, lambda now: (0, "", ""), sacct=recorded("sacct_states.txt"),
                     results_at={i: 1.0 for i in range(10) if i != 5})
    lost = make_waiter(tmp_path, fake, submissions(("700", 10))).wait()

    first_seen = fake.times("sacct")[0]
    assert list(lost) == [5] and "Slurm job 700_5 ended COMPLETED" in lost[5]
    assert fake.now >= first_seen + RESULT_GRACE_S
    assert fake.now < first_seen + RESULT_GRACE_S + 2 * POLL_S


def test_completed_result_arriving_within_grace_is_not_lost(tmp_path):
    fake = FakeSlurm(tmp_path, lambda now: (0, "", ""), sacct=recorded("sacct_states.txt"),
                     results_at={i: (45.0 if i == 5 else 1.0) for i in range(10)})
    lost = make_waiter(tmp_path, fake, submissions(("700", 10))).wait()
    assert lost == {}
    assert fake.times("sacct")  # it did see task 5 gone without a result before the file arrived


def test_squeue_failures_back_off_then_recover(tmp_path):
    text = recorded("squeue_throttled_array.txt")
    fake = FakeSlurm(tmp_path, None, results_at={i: 300.0 for i in range(10)})
    ok_answer = squeue_without_finished(tmp_path, text)
    fake.squeue = lambda now: (1, "", SOCKET_TIMEOUT) if now < 100 else ok_answer(now)
    lost = make_waiter(tmp_path, fake, submissions(("700", 10))).wait()

    assert lost == {}
    times = fake.times("squeue")
    failing = [t for t in times if t < 100]
    gaps = [b - a for a, b in zip(failing, failing[1:])]
    assert gaps == [2 * POLL_S, 4 * POLL_S]  # doubling, not every 10 s
    assert len(failing) < 100 / POLL_S / 2
    after = [t for t in times if t >= 100]
    assert [b - a for a, b in zip(after, after[1:])] == [POLL_S] * (len(after) - 1)  # back to the poll interval
    assert len(after) > 5
    assert fake.times("sacct") == []  # a failed squeue says nothing about the tasks


def test_task_not_yet_in_sacct_gets_time_for_its_result(tmp_path):
    # tests/data/README.md: right after a 500-task array left squeue, sacct listed only 437 of its tasks.
    # Here sacct has not recorded 700_9 yet and its result file shows up 3 s after the first check.
    lagging = "\n".join(r for r in recorded("sacct_states.txt").splitlines() if not r.startswith("700_9|"))
    fake = FakeSlurm(tmp_path, lambda now: (0, "", ""), sacct=lagging,
                     results_at={i: (13.0 if i == 9 else 1.0) for i in range(10)})
    assert make_waiter(tmp_path, fake, submissions(("700", 10))).wait() == {}
