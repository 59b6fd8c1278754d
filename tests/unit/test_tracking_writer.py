"""SpoolWriter on real files and real processes: round trip, threads, background flush, SIGTERM, SIGKILL, I/O errors."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slurmml.tracking import spool
from slurmml.tracking.writer import SpoolWriter
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


def read_records(path: Path) -> list[dict]:
    chunk = spool.parse_chunk(path.read_bytes())
    assert chunk.problems == []
    return chunk.records


def wait_for(predicate, timeout_s: float = 10.0, interval_s: float = 0.02):
    return wait_until(predicate, timeout_s, interval_s, what="the spool")


def test_records_round_trip_through_parse_chunk(tmp_path: Path) -> None:
    path = tmp_path / "run" / "spool.jsonl"
    records = [
        {"k": "start", "t": 1.5, "run_id": "r1", "config": {"a": [1, 2], "b": None}, "host": "nödé"},
        {"k": "m", "t": 2.0, "s": 0, "v": {"loss": 0.25, "acc": 1, "nan": float("nan"), "inf": float("inf")}},
        {"k": "p", "t": 3.0, "v": {"path": Path("/x/y"), "text": 'quote " and \n newline'}},
        {"k": "end", "t": 4.0, "state": "COMPLETED", "exit_code": 0, "error": None},
    ]
    with SpoolWriter(path) as writer:
        for record in records:
            writer.write(record)
    assert path.read_bytes() == b"".join(spool.encode(record) for record in records)  # the spool's own encoding
    parsed = read_records(path)
    assert [r["k"] for r in parsed] == ["start", "m", "p", "end"]
    assert parsed[0] == records[0]
    assert parsed[1]["v"]["loss"] == 0.25 and parsed[1]["v"]["inf"] == float("inf")
    assert parsed[2]["v"] == {"path": "/x/y", "text": 'quote " and \n newline'}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_flush_is_one_write_and_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "spool.jsonl"
    path.write_bytes(spool.encode({"k": "m", "t": 0, "s": None, "v": {}}))
    calls = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: calls.append(len(data)) or real_write(fd, data))
    writer = SpoolWriter(path, interval_s=3600)
    for step in range(100):
        writer.write({"k": "m", "t": 1.0, "s": step, "v": {"loss": 1.0}})
    assert writer.flush()
    assert len(calls) == 1
    writer.close()
    assert [r["s"] for r in read_records(path)] == [None, *range(100)]


def test_many_threads_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    writer = SpoolWriter(path, interval_s=0.01)  # flushes race with the writers on purpose
    threads_n, per_thread = 8, 5000

    def work(thread: int) -> None:
        for step in range(per_thread):
            writer.write({"k": "m", "t": 0.0, "s": step, "v": {"thread": thread}})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    records = read_records(path)
    assert len(records) == threads_n * per_thread
    for thread in range(threads_n):  # each thread's records, complete and in its order
        assert [r["s"] for r in records if r["v"]["thread"] == thread] == list(range(per_thread))


def test_background_flush_without_explicit_flush(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    writer = SpoolWriter(path)
    writer.write({"k": "m", "t": 0.0, "s": 1, "v": {"loss": 1.0}})
    wait_for(lambda: path.exists() and path.read_bytes().endswith(b"\n"), timeout_s=5)
    assert len(read_records(path)) == 1
    writer.close()


def test_writes_after_close_still_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    writer = SpoolWriter(path)
    writer.close()
    writer.write({"k": "m", "t": 0.0, "s": 1, "v": {}})
    assert len(read_records(path)) == 1


def test_io_error_is_reported_once_and_never_raised(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    writer = SpoolWriter(blocker / "spool.jsonl", interval_s=3600)
    for step in range(3):
        writer.write({"k": "m", "t": 0.0, "s": step, "v": {}})
        assert writer.flush() is False
    writer.close()
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("slurmml: cannot write") and "will retry" in errors[0]


def test_unwritten_records_are_retried(tmp_path: Path) -> None:
    folder = tmp_path / "later"
    folder.write_text("")  # a file where the folder should be: writing fails
    writer = SpoolWriter(folder / "spool.jsonl", interval_s=3600)
    writer.write({"k": "m", "t": 0.0, "s": 1, "v": {}})
    assert writer.flush() is False
    folder.unlink()  # the file system recovers
    writer.write({"k": "m", "t": 0.0, "s": 2, "v": {}})
    assert writer.flush() is True
    writer.close()
    assert [r["s"] for r in read_records(folder / "spool.jsonl")] == [1, 2]


def test_unencodable_record_is_dropped_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "spool.jsonl"
    loop: dict = {"k": "p", "t": 0.0}
    loop["v"] = loop
    with SpoolWriter(path) as writer:
        writer.write({"k": "m", "t": 0.0, "s": 1, "v": {}})
        writer.write(loop)
        writer.write({"k": "m", "t": 0.0, "s": 2, "v": {}})
    assert [r["s"] for r in read_records(path)] == [1, 2]
    assert "not JSON-encodable" in capsys.readouterr().err


CHILD_SIGTERM = """
import sys, time
from slurmml.tracking.writer import SpoolWriter
writer = SpoolWriter(sys.argv[1], interval_s=3600)  # no background flush: only SIGTERM can save the records
for step in range(1000):
    writer.write({"k": "m", "t": time.time(), "s": step, "v": {"loss": 1.0 / (step + 1)}})
print("ready", flush=True)
time.sleep(60)
"""


def test_sigterm_flushes_buffered_records_and_still_kills(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    process = subprocess.Popen([sys.executable, "-c", CHILD_SIGTERM, str(path)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    assert not path.exists()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == -signal.SIGTERM, process.stderr.read()
    assert [r["s"] for r in read_records(path)] == list(range(1000))


CHILD_SIGTERM_CHAINED = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda signum, frame: (print("user handler", flush=True), sys.exit(3)))
from slurmml.tracking.writer import SpoolWriter
writer = SpoolWriter(sys.argv[1], interval_s=3600)
writer.write({"k": "m", "t": 0.0, "s": 7, "v": {}})
print("ready", flush=True)
time.sleep(60)
"""


def test_sigterm_chains_to_the_previous_handler(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    process = subprocess.Popen([sys.executable, "-c", CHILD_SIGTERM_CHAINED, str(path)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 3
    assert process.stdout.read().strip() == "user handler"
    assert [r["s"] for r in read_records(path)] == [7]


CHILD_LOOP = """
import sys, time
from slurmml.tracking.writer import SpoolWriter
writer = SpoolWriter(sys.argv[1], interval_s=0.001)
step = 0
while True:
    writer.write({"k": "m", "t": time.time(), "s": step, "v": {"loss": 0.5, "text": "x" * (step % 300)}})
    step += 1
    if step % 50 == 0:
        time.sleep(0)
"""


def test_sigkill_mid_logging_leaves_only_parseable_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    process = subprocess.Popen([sys.executable, "-c", CHILD_LOOP, str(path)], cwd=ROOT)
    try:
        wait_for(lambda: path.exists() and path.stat().st_size > 1_000_000, timeout_s=60)
    finally:
        process.kill()
        process.wait(timeout=30)
    data = path.read_bytes()
    chunk = spool.parse_chunk(data)
    assert chunk.problems == []
    assert len(chunk.records) > 1000
    assert [r["s"] for r in chunk.records] == list(range(len(chunk.records)))  # nothing lost before the tear
    assert chunk.consumed >= len(data) - 1000  # at most one (short) torn line at the end


CHILD_FORK = """
import os, sys
from slurmml.tracking.writer import SpoolWriter
writer = SpoolWriter(sys.argv[1], interval_s=3600)
writer.write({"k": "m", "t": 0.0, "s": 1, "v": {}})
pid = os.fork()
if pid == 0:  # the child inherits the buffer: it must neither write it again nor write its own records
    writer.write({"k": "m", "t": 0.0, "s": 99, "v": {}})
    writer.flush()
    sys.exit(0)  # runs atexit handlers in the child
os.waitpid(pid, 0)
writer.write({"k": "m", "t": 0.0, "s": 2, "v": {}})
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_duplicate_records(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    result = subprocess.run([sys.executable, "-c", CHILD_FORK, str(path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [r["s"] for r in read_records(path)] == [1, 2]  # flushed at exit, once
    assert "child process" in result.stderr
